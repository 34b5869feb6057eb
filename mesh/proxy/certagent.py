"""The proxy's certificate agent (Istio's pilot-agent SDS): its workload certificate, obtained and rotated.

On start it makes an EC P-256 key (the key never leaves the proxy), sends a CSR to the control plane's
`POST /v1/certificates` with its credential, and installs the answer with `MeshTls.install`; the proxy
starts discovery once `first` is set. It renews at `grace_ratio` of the certificate's lifetime (Istio's
grace ratio, 0.5, with a little jitter so proxies started together do not renew together), with a new key
each time; a failure is retried after a jittered, doubling delay. Installing swaps the SSL contexts only:
pooled connections keep theirs.

Credentials, in order: a token file (`--token-file`, Kubernetes projected token, re-read each time); the
one-time bootstrap token (local, from `WEIR_BOOTSTRAP_TOKEN`), dropped once used or refused; the current
client certificate while it is valid. With none left (the certificate expired and the bootstrap token is
gone) `run` raises CredentialsExhausted: the proxy exits and its supervisor restarts it with a new token.

Decisions (`rotation_time`, `retry_delay`, credential choice) are plain functions of an injected clock
and random source; `sleep` is injected too, so tests drive rotation with a fake clock.

`cryptography` is imported where a key, CSR or certificate is handled, not with the module: it adds about
10 MiB to a proxy's RSS (its Rust extension carries its own OpenSSL), which a proxy without a workload
identity (no CA, no static certificate) never needs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesh.proxy import stats, tls

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger("weir.proxy.certagent")

TOKEN_ENV = "WEIR_BOOTSTRAP_TOKEN"
TOKEN_FILE_ENV = "WEIR_TOKEN_FILE"
GRACE_RATIO = 0.5  # renew when half of the lifetime is left (Istio's SECRET_GRACE_PERIOD_RATIO)
GRACE_JITTER = 0.02  # ± this fraction of the lifetime
RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0
MAX_TOKEN_BYTES = 16 * 1024

# (request body, send our client certificate) -> (HTTP status, JSON answer)
Issuer = Callable[[dict, bool], Awaitable[tuple[int, Any]]]


class CredentialsExhausted(Exception):
    """No credential left to ask for a certificate with; the proxy must be restarted with a new one."""


class IssueError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"control plane answered {status}: {message}")
        self.status = status


def rotation_time(not_before: float, not_after: float, grace_ratio: float, jitter: float = 0.0) -> float:
    """When to renew: once `grace_ratio` of the lifetime is left, moved by `jitter` × lifetime."""
    lifetime = not_after - not_before
    return not_before + (1.0 - grace_ratio + jitter) * lifetime


def retry_delay(failures: int, rng: random.Random, base: float = RETRY_BASE_S, cap: float = RETRY_MAX_S) -> float:
    """Doubling delay with equal jitter: half fixed (no tight loop), half random (no thundering herd)."""
    delay = min(cap, base * 2 ** max(0, failures - 1))
    return delay / 2 + rng.uniform(0, delay / 2)


def make_csr(key: ec.EllipticCurvePrivateKey, spiffe_id: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Weir")]))
    if spiffe_id:  # the identity the proxy expects: the CA refuses the CSR unless the caller holds it
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                                        critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def spiffe_of(cert: x509.Certificate) -> str:
    from cryptography import x509

    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        return ""
    return next((uri for uri in uris if uri.startswith(tls.SPIFFE_PREFIX)), "")


class CertAgent:
    def __init__(self, mesh_tls: tls.MeshTls, issue: Issuer, *, spiffe_id: str = "",
                 bootstrap_token: str | None = None, token_file: str | Path | None = None,
                 ttl_s: float | None = None, grace_ratio: float = GRACE_RATIO, grace_jitter: float = GRACE_JITTER,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 counters: stats.Counters | None = None) -> None:
        if not 0.0 < grace_ratio < 1.0:
            raise ValueError(f"grace ratio must be between 0 and 1, got {grace_ratio}")
        self.mesh_tls = mesh_tls
        self.issue = issue
        self.spiffe_hint = spiffe_id
        self.bootstrap_token = bootstrap_token or None
        self.token_file = Path(token_file) if token_file else None
        self.ttl_s = ttl_s
        self.grace_ratio = grace_ratio
        self.grace_jitter = grace_jitter
        self.clock = clock
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.counters = counters or stats.Counters()
        self.first = asyncio.Event()  # set once the first certificate is installed
        self.not_before = self.not_after = 0.0
        self.serial = ""
        self.rotate_at = 0.0  # when the next attempt is due (0: now)
        self.failures = 0  # consecutive
        self.last_error: str | None = None
        self.last_rotation: float | None = None
        for name in ("cert_rotations_total", "cert_rotation_failures_total"):
            self.counters.inc(name, 0)
        self.counters.gauge("cert_expiry_timestamp_seconds", lambda: self.not_after)

    # -- decisions -----------------------------------------------------------------------------------------
    def valid(self, now: float) -> bool:
        return self.mesh_tls.ready and now < self.not_after

    def credential(self, now: float) -> tuple[str | None, bool]:
        """(token to send, whether to send our certificate); CredentialsExhausted when there is none."""
        if self.token_file is not None:
            with open(self.token_file, "rb") as handle:  # the kubelet rotates it: read it every time
                return handle.read(MAX_TOKEN_BYTES).decode().strip(), self.valid(now)
        if self.bootstrap_token:
            return self.bootstrap_token, False
        if self.valid(now):
            return None, True
        raise CredentialsExhausted("no certificate, no bootstrap token left and no --token-file: restart the "
                                   "proxy with a new bootstrap token")

    # -- I/O -----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Obtain the first certificate, then keep it fresh; returns only by cancellation or exhaustion."""
        while True:
            delay = self.rotate_at - self.clock()
            if delay > 0:
                await self.sleep(delay)
            try:
                await self.renew()
            except (IssueError, OSError, ssl.SSLError, ValueError, KeyError, TypeError, TimeoutError) as exc:
                self._failed(exc)

    async def renew(self) -> None:
        """One CSR round trip; the new certificate is installed when this returns."""
        now = self.clock()
        token, with_cert = self.credential(now)
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        body: dict[str, Any] = {"csr": make_csr(key, self.spiffe_hint).decode()}
        if token:
            body["token"] = token
        if self.ttl_s:
            body["ttlSeconds"] = self.ttl_s
        status, answer = await self.issue(body, with_cert)
        if token is not None and token == self.bootstrap_token and (status == 200 or status in (401, 403)):
            self.bootstrap_token = None  # used, or refused for good: never sent again
        if status != 200:
            raise IssueError(status, str(answer.get("error") if isinstance(answer, dict) else answer))
        self._install(key, answer["certChain"].encode(), answer["rootCert"].encode())

    def _install(self, key: ec.EllipticCurvePrivateKey, chain_pem: bytes, root_pem: bytes) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        leaf = x509.load_pem_x509_certificate(chain_pem)
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        if (leaf.public_key().public_bytes(serialization.Encoding.DER, public)
                != key.public_key().public_bytes(serialization.Encoding.DER, public)):
            raise ValueError("the control plane answered a certificate for another key")
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        rotated = self.mesh_tls.ready
        self.mesh_tls.install(chain_pem, key_pem, root_pem, spiffe_of(leaf))
        self.not_before = leaf.not_valid_before_utc.timestamp()
        self.not_after = leaf.not_valid_after_utc.timestamp()
        self.serial = f"{leaf.serial_number:x}"
        jitter = self.rng.uniform(-self.grace_jitter, self.grace_jitter) if self.grace_jitter else 0.0
        # The lifetime counts from now, not from notBefore: the CA backdates notBefore for clock skew, which
        # with a short TTL would put the renewal in the past and renew in a loop.
        self.rotate_at = rotation_time(max(self.not_before, self.clock()), self.not_after, self.grace_ratio, jitter)
        self.failures, self.last_error, self.last_rotation = 0, None, self.clock()
        if rotated:
            self.counters.inc("cert_rotations_total")
        self.first.set()
        log.info("installed certificate %s serial %s, valid until %s, renewal in %.0f s", self.mesh_tls.spiffe_id,
                 self.serial, _iso(self.not_after), self.rotate_at - self.clock())

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = str(exc) or type(exc).__name__
        self.counters.inc("cert_rotation_failures_total")
        delay = retry_delay(self.failures, self.rng)
        self.rotate_at = self.clock() + delay
        level = logging.ERROR if self.failures == 1 or not self.valid(self.clock()) else logging.WARNING
        log.log(level, "certificate request failed (%d in a row, retry in %.1f s): %s", self.failures, delay,
                self.last_error)

    def dump(self) -> dict[str, Any]:
        """The `secrets` config dump: the certificate in force and how its rotation goes."""
        now = self.clock()
        return {**describe(self.mesh_tls, now), "source": "ca", "rotation": {
            "graceRatio": self.grace_ratio, "rotations": int(self.counters.get("cert_rotations_total")),
            "failures": int(self.counters.get("cert_rotation_failures_total")),
            "consecutiveFailures": self.failures, "lastError": self.last_error,
            "lastRotation": _iso(self.last_rotation) if self.last_rotation else None,
            "nextAttempt": _iso(max(self.rotate_at, now))}}


def describe(mesh_tls: tls.MeshTls | None, now: float) -> dict[str, Any]:
    """What `meshctl proxy-config W secrets` shows: chain, SPIFFE ID, validity, root fingerprint; no key."""
    if mesh_tls is None or not mesh_tls.ready:
        return {"state": "PENDING" if mesh_tls is not None else "NONE", "chain": []}
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    chain = x509.load_pem_x509_certificates(mesh_tls.chain_pem)
    leaf = chain[0]
    roots = x509.load_pem_x509_certificates(mesh_tls.roots_pem) if mesh_tls.roots_pem else []
    not_before, not_after = leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()
    return {
        "state": "ACTIVE" if now < not_after else "EXPIRED",
        "spiffeId": mesh_tls.spiffe_id, "serial": f"{leaf.serial_number:x}",
        "notBefore": _iso(not_before), "notAfter": _iso(not_after),
        "lifetimeSeconds": round(not_after - not_before, 3), "expiresInSeconds": round(not_after - now, 3),
        "chain": [_cert_row(cert) for cert in chain],
        "roots": [{**_cert_row(root), "fingerprintSha256": root.fingerprint(hashes.SHA256()).hex(":").upper()}
                  for root in roots],
    }


def install_static(mesh_tls: tls.MeshTls, cert_file: str, key_file: str, roots_file: str) -> None:
    """A fixed identity from files (`--tls-cert/--tls-key/--tls-roots`), for a proxy without a CA."""
    from cryptography import x509

    chain = Path(cert_file).read_bytes()
    leaf = x509.load_pem_x509_certificate(chain)
    mesh_tls.install(chain, Path(key_file).read_bytes(), Path(roots_file).read_bytes(), spiffe_of(leaf))


def _cert_row(cert: x509.Certificate) -> dict[str, Any]:
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "serial": f"{cert.serial_number:x}", "notBefore": _iso(cert.not_valid_before_utc.timestamp()),
            "notAfter": _iso(cert.not_valid_after_utc.timestamp())}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
