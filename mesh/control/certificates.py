"""The certificate service behind `POST /v1/certificates` (Istio's CreateCertificate): CSR in, chain out.

A request is `{"csr": PEM, "token": "...", "ttlSeconds": N}`. The CSR is checked first (400), so a bad one
never uses up a one-time token; then the caller is authenticated, by its token (bootstrap or
service-account, `mesh.control.authn`) or, for a renewal, by the client certificate it presents on the
mesh channel; then the CA signs the caller's SPIFFE ID. A CSR that names an identity (a URI SAN) other than
the caller's is refused (403, counter `refused_identity`): a caller gets a certificate only for the identity
it holds, whatever it asks (the one-time token it spent on the attempt stays spent). The lifetime is the
requested one, at most the CA's workload TTL (`--workload-cert-ttl`). The answer is
`{"certChain", "rootCert", "notAfter", "serial", "spiffeId"}`. `mesh.control.channel` moves the bytes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mesh.control import authn
from mesh.control import ca as ca_mod

log = logging.getLogger(__name__)

MAX_CSR_CHARS = 16 * 1024  # an EC or RSA-4096 CSR is well under 4 KB


class RequestError(Exception):
    """A request the service cannot act on (400)."""

    status = 400


class TokenAuthenticator(Protocol):
    async def authenticate(self, token: str) -> authn.Caller: ...


@dataclass(frozen=True, slots=True)
class Issued:
    cert_chain: bytes  # leaf, then the intermediates; not the root
    root_cert: bytes
    not_after: float
    serial: str  # hex
    spiffe_id: str

    def to_json(self) -> dict[str, Any]:
        return {"certChain": self.cert_chain.decode(), "rootCert": self.root_cert.decode(),
                "notAfter": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.not_after)),
                "serial": self.serial, "spiffeId": self.spiffe_id}


class CertificateService:
    def __init__(self, authority: ca_mod.CertificateAuthority, tokens: TokenAuthenticator, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.authority = authority
        self.tokens = tokens
        self.clock = clock
        self.peers = authn.PeerCertificates(lambda: self.authority, clock=clock)
        self.stats: Counter[str] = Counter()

    async def issue(self, body: Any, peer_der: bytes | None) -> Issued:
        """Sign the request's CSR for the authenticated caller; RequestError or authn.AuthnError if not."""
        try:
            csr_pem, token, ttl = _parse(body)
            asked = requested_identities(ca_mod.load_csr(csr_pem))
        except (RequestError, ca_mod.CAError) as exc:
            self.stats["refused_bad_request"] += 1
            raise RequestError(str(exc)) from None
        try:
            caller = await self.tokens.authenticate(token) if token else self.peers.authenticate(peer_der)
        except authn.AuthnError as exc:
            self.stats[f"refused_{exc.status}"] += 1
            log.warning("certificate refused (%d): %s", exc.status, exc)
            raise
        foreign = [uri for uri in asked if uri != caller.spiffe_id]
        if foreign:
            self.stats["refused_identity"] += 1
            log.warning("certificate refused (403): the CSR asks for %s, the caller is %s (%s)",
                        ", ".join(foreign), caller.spiffe_id, caller.via)
            raise authn.Forbidden(f"the CSR asks for identity {', '.join(foreign)}, but the caller is authenticated "
                                  f"as {caller.spiffe_id} ({caller.via}): a certificate is issued only for the "
                                  f"caller's own identity")
        return self._sign(csr_pem, caller, ttl)

    def _sign(self, csr_pem: bytes, caller: authn.Caller, ttl: float | None) -> Issued:
        authority = self.authority
        lifetime = authority.workload_ttl_s if ttl is None else min(ttl, authority.workload_ttl_s)
        try:
            chain = authority.sign_workload(csr_pem, caller.spiffe_id, now=self.clock(), ttl_s=lifetime)
        except ca_mod.CAError as exc:
            raise RequestError(str(exc)) from None
        leaf = x509.load_pem_x509_certificate(chain)
        issued = Issued(chain, authority.root_pem, leaf.not_valid_after_utc.timestamp(), f"{leaf.serial_number:x}",
                        caller.spiffe_id)
        self.stats[f"issued_{caller.via.replace('-', '_')}"] += 1
        log.info("issued %s serial %s until %s (%s%s)", caller.spiffe_id, issued.serial, issued.to_json()["notAfter"],
                 caller.via, f", proxy {caller.proxy_id}" if caller.proxy_id else "")
        return issued

    def dump(self) -> dict[str, Any]:
        """`/debug/ca`: the signing certificate, the root's fingerprint, what was issued and refused."""
        authority = self.authority
        return {"subject": authority.cert.subject.rfc4514_string(),
                "issuer": authority.cert.issuer.rfc4514_string(),
                "notAfter": authority.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "root": {"subject": authority.root.subject.rfc4514_string(),
                         "fingerprintSha256": fingerprint(authority.root)},
                "workloadCertTtlSeconds": authority.workload_ttl_s, "counters": dict(sorted(self.stats.items()))}


def requested_identities(csr: x509.CertificateSigningRequest) -> tuple[str, ...]:
    """The URI SANs a CSR asks for (a proxy's CSR names its SPIFFE ID; none is fine too)."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.UniformResourceIdentifier))


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _parse(body: Any) -> tuple[bytes, str | None, float | None]:
    if not isinstance(body, dict):
        raise RequestError("expected a JSON object {\"csr\": PEM, \"token\": ..., \"ttlSeconds\": ...}")
    csr = body.get("csr")
    if not isinstance(csr, str) or not csr.strip() or len(csr) > MAX_CSR_CHARS:
        raise RequestError(f"csr: required, a PEM certificate signing request of at most {MAX_CSR_CHARS} characters")
    token = body.get("token")
    if token is not None and (not isinstance(token, str) or not token):
        raise RequestError("token: a non-empty string when given")
    ttl = body.get("ttlSeconds")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise RequestError(f"ttlSeconds: a positive number of seconds when given, got {ttl!r}")
    return csr.encode(), token, None if ttl is None else float(ttl)
