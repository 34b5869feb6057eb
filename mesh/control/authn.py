"""Who is asking: the identity behind a CSR or a discovery request, from the credential it carries.

Three authenticators, each returning a `Caller` (namespace + service account, hence a SPIFFE ID) or
raising an `AuthnError` whose `status` is the HTTP answer:
- `BootstrapTokens` (local): a one-time token minted by the supervisor (`mesh.control.tokens`); the
  identity is the token record's.
- `TokenReviewer` (Kubernetes): the pod's projected service-account token, checked by the API server's
  TokenReview for our audience; the identity is `system:serviceaccount:<ns>:<sa>`.
- `PeerCertificates`: the client certificate on the mesh channel, issued by this CA and valid now; used
  for renewals (same SPIFFE ID only) and to authorize discovery.
`mesh.control.certificates` and `mesh.control.channel` use them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from mesh.control import ca as ca_mod
from mesh.control import kube, tokens
from mesh.view import security

log = logging.getLogger(__name__)

DEFAULT_AUDIENCE = "weir-ca"
TOKENREVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
MAX_TOKEN_CHARS = 16 * 1024  # a projected service-account JWT is ~1 KB
_SA_USER = re.compile(r"system:serviceaccount:([a-z0-9.-]+):([a-z0-9.-]+)")
_SPIFFE = re.compile(r"spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)")

BOOTSTRAP_TOKEN = "bootstrap-token"
SERVICE_ACCOUNT_TOKEN = "service-account-token"
CLIENT_CERTIFICATE = "client-certificate"


class AuthnError(Exception):
    """No acceptable credential (401)."""

    status = 401


class Forbidden(AuthnError):
    """A valid credential for an identity that may not have a workload certificate (403)."""

    status = 403


class Unavailable(AuthnError):
    """The credential could not be checked now (the API server failed): retry later (503)."""

    status = 503


@dataclass(frozen=True, slots=True)
class Caller:
    namespace: str
    service_account: str
    via: str  # BOOTSTRAP_TOKEN, SERVICE_ACCOUNT_TOKEN or CLIENT_CERTIFICATE
    proxy_id: str = ""  # known for bootstrap tokens only
    trust_domain: str = security.TRUST_DOMAIN

    @property
    def spiffe_id(self) -> str:
        return security.spiffe_id(self.namespace, self.service_account, self.trust_domain)


class BootstrapTokens:
    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.clock = clock

    async def authenticate(self, token: str) -> Caller:
        now = self.clock()
        try:
            record = tokens.consume(self.directory, token, now=now)
        except tokens.TokenError as exc:
            raise AuthnError(str(exc)) from None
        finally:
            tokens.sweep(self.directory, now=now)  # a few files; keeps unused tokens from piling up
        return Caller(record.namespace, record.service_account, BOOTSTRAP_TOKEN, record.proxy_id)


class TokenReviewer:
    def __init__(self, transport: kube.Transport, audience: str = DEFAULT_AUDIENCE) -> None:
        self.transport = transport
        self.audience = audience

    async def authenticate(self, token: str) -> Caller:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthnError("malformed service-account token")
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self.audience]}}
        try:
            status, doc = await self.transport("POST", TOKENREVIEW_PATH, body)
        except (TimeoutError, kube.KubeError) as exc:
            raise Unavailable(f"TokenReview failed: {exc}") from None
        if status not in (200, 201):
            raise Unavailable(f"TokenReview failed: {kube.status_message(status, doc)}")
        return self._caller(doc.get("status") or {})

    def _caller(self, review: dict) -> Caller:
        if not review.get("authenticated"):
            raise AuthnError(f"service-account token not authenticated: {review.get('error') or 'no reason given'}")
        # An API server that ignores spec.audiences answers without ours: such a token is not for us.
        if self.audience not in (review.get("audiences") or ()):
            raise AuthnError(f"service-account token is not for audience {self.audience!r} "
                             f"(it is for {review.get('audiences') or 'the API server'})")
        username = str((review.get("user") or {}).get("username") or "")
        match = _SA_USER.fullmatch(username)
        if match is None:
            raise Forbidden(f"{username or 'an unnamed user'} is not a service account")
        return Caller(match.group(1), match.group(2), SERVICE_ACCOUNT_TOKEN)


def parse_spiffe(uri: str) -> tuple[str, str, str] | None:
    """(trust domain, namespace, service account) of an Istio-style SPIFFE ID, else None."""
    match = _SPIFFE.fullmatch(uri)
    return match.groups() if match else None


class PeerCertificates:
    """Checks a client certificate (DER, from the TLS channel) against the current CA, with our clock.

    `ssl` has already checked the chain and validity during the handshake; this is the same check made
    explicitly, so an identity is never taken from a certificate that a long-lived connection presented
    before it expired, nor from one of another root (the ssl layer trusts the root, we want our issuer)."""

    def __init__(self, authority: Callable[[], ca_mod.CertificateAuthority], *,
                 trust_domain: str = security.TRUST_DOMAIN, clock: Callable[[], float] = time.time) -> None:
        self.authority = authority
        self.trust_domain = trust_domain
        self.clock = clock

    def authenticate(self, der: bytes | None) -> Caller:
        if not der:
            raise AuthnError("no client certificate: present your workload certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise AuthnError("unreadable client certificate") from None
        try:
            cert.verify_directly_issued_by(self.authority().cert)
        except (ValueError, TypeError, InvalidSignature):
            raise AuthnError("client certificate was not issued by this mesh's CA") from None
        now = self.clock()
        if now >= cert.not_valid_after_utc.timestamp():
            raise AuthnError(f"client certificate expired at {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
        if now < cert.not_valid_before_utc.timestamp():
            raise AuthnError("client certificate is not valid yet")
        return self._caller(cert)

    def _caller(self, cert: x509.Certificate) -> Caller:
        try:
            uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        for uri in uris:
            parts = parse_spiffe(uri)
            if parts is None:
                continue
            domain, namespace, account = parts
            if domain != self.trust_domain:
                raise Forbidden(f"client certificate identity {uri} is not in trust domain {self.trust_domain}")
            return Caller(namespace, account, CLIENT_CERTIFICATE, trust_domain=domain)
        raise Forbidden("client certificate carries no SPIFFE identity")
