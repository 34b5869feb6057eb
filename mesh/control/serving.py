"""The control plane's own TLS identity on the mesh channel (Istio's istiod DNS certificate).

A serving certificate from the mesh CA for the names proxies dial (`DEFAULT_HOSTS`: loopback locally,
the `weir-control` Service in a cluster), in one SSL context that trusts the mesh root and asks for a
client certificate without requiring one (CERT_OPTIONAL): a proxy without a certificate yet may still
send its first CSR; discovery then requires one (`mesh.control.channel`). The certificate is renewed at
half its lifetime by reloading it into the same context: new handshakes get the new one, open
connections are untouched. `ssl` loads certificates from files only: they are written 0600 under the
CA directory.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography import x509

from mesh.control import ca as ca_mod
from mesh.control import private

log = logging.getLogger(__name__)

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "weir-control.weir-system.svc",
                 "weir-control.weir-system.svc.cluster.local")
CERT_FILE = "serving-cert.pem"
KEY_FILE = "serving-key.pem"
RENEW_AT = 0.5  # fraction of the lifetime after which the serving certificate is replaced
RETRY_S = 30.0  # after a failed renewal (the old certificate is still valid for half its life)


def server_context(cert_file: Path, key_file: Path, roots_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    ctx.load_verify_locations(cadata=roots_pem.decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL  # a proxy's first CSR comes without a certificate
    return ctx


class ServingCertificate:
    def __init__(self, authority: Callable[[], ca_mod.CertificateAuthority], directory: Path,
                 hosts: tuple[str, ...] = DEFAULT_HOSTS, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.authority = authority
        self.directory = Path(directory)
        self.hosts = hosts
        self.clock = clock
        self.sleep = sleep
        self.context: ssl.SSLContext | None = None
        self.issued_at = 0.0
        self.not_after = 0.0

    @property
    def cert_file(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def key_file(self) -> Path:
        return self.directory / KEY_FILE

    def issue(self) -> ssl.SSLContext:
        """A new serving certificate, loaded into the context (created on the first call)."""
        authority = self.authority()
        now = self.clock()
        chain, key = authority.issue_server(self.hosts, now=now)
        private.write_file(self.key_file, key)  # both 0600
        private.write_file(self.cert_file, chain)
        if self.context is None:
            self.context = server_context(self.cert_file, self.key_file, authority.root_pem)
        else:
            self.context.load_cert_chain(str(self.cert_file), str(self.key_file))
        leaf = x509.load_pem_x509_certificate(chain)  # the first certificate of the chain: ours
        self.issued_at, self.not_after = now, leaf.not_valid_after_utc.timestamp()
        log.info("mesh channel serving certificate for %s, renewed in %.0f s", ", ".join(self.hosts),
                 self.renew_in())
        return self.context

    def renew_in(self) -> float:
        return max(0.0, self.issued_at + RENEW_AT * (self.not_after - self.issued_at) - self.clock())

    async def run(self) -> None:
        """Renew forever (cancelled at shutdown)."""
        while True:
            await self.sleep(self.renew_in())
            try:
                self.issue()
            except (OSError, ssl.SSLError, ca_mod.CAError) as exc:
                log.error("renewing the serving certificate failed (retry in %.0f s): %s", RETRY_S, exc)
                await self.sleep(RETRY_S)
