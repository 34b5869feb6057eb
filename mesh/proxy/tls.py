"""The proxy's mesh TLS material: SSL contexts built from its workload certificate, and peer identities.

`MeshTls.install()` is called by `mesh.proxy.certagent` with each certificate it obtains (first issue and
every rotation): it builds fresh server and client contexts and swaps two references, so a connection
being set up keeps the context it started with and every later one uses the new certificate; pooled
connections are untouched (no failed request on rotation). `ssl` only loads a certificate from files, so
the chain and key are written under the proxy's own directory with mode 0600: the key never leaves it.

Both contexts trust the mesh root only and require the peer's certificate; the SPIFFE ID (a URI SAN) is
checked by us, since `ssl` checks host names only (`peer_identity`, `check_peer`). A server context keeps
the SNI a client sent (`record_sni`, its servername callback) for the connection to read (`sni`), which is
what AuthorizationPolicy's `connection.sni` compares.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

SPIFFE_PREFIX = "spiffe://"
ALPN = ["http/1.1"]


class MeshTls:
    __slots__ = ("directory", "server", "client", "spiffe_id", "chain_pem", "roots_pem", "installed")

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.server: ssl.SSLContext | None = None  # inbound mTLS (also gateway ISTIO_MUTUAL servers)
        self.client: ssl.SSLContext | None = None  # outbound ISTIO_MUTUAL
        self.spiffe_id = ""
        self.chain_pem = b""
        self.roots_pem = b""
        self.installed = 0  # certificates installed so far (1 after the first issue)

    @property
    def ready(self) -> bool:
        return self.server is not None

    @property
    def cert_file(self) -> Path:
        return self.directory / "cert-chain.pem"

    @property
    def key_file(self) -> Path:
        return self.directory / "key.pem"

    @property
    def root_file(self) -> Path:
        return self.directory / "root-cert.pem"

    def install(self, chain_pem: bytes, key_pem: bytes, roots_pem: bytes, spiffe_id: str) -> None:
        """Load a new certificate; raises ssl.SSLError (and changes nothing) when chain and key do not fit."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(self.key_file, key_pem)
        _write_private(self.cert_file, chain_pem)
        _write_private(self.root_file, roots_pem)
        server = server_context(self.cert_file, self.key_file, roots_pem)
        client = client_context(roots_pem, self.cert_file, self.key_file)
        self.server, self.client = server, client
        self.spiffe_id, self.chain_pem, self.roots_pem = spiffe_id, chain_pem, roots_pem
        self.installed += 1


def server_context(cert_file: Path | str, key_file: Path | str, roots_pem: bytes | None,
                   require_client_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    if roots_pem:
        ctx.load_verify_locations(cadata=roots_pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(ALPN)
    ctx.sni_callback = record_sni
    return ctx


def client_context(roots_pem: bytes | None, cert_file: Path | str | None = None,
                   key_file: Path | str | None = None, *, check_hostname: bool = False) -> ssl.SSLContext:
    """Mesh client context: chain verified to `roots_pem`; the SPIFFE ID is checked after the handshake.
    `roots_pem=None` trusts the system roots (DestinationRule SIMPLE to an outside service)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if roots_pem:
        ctx.load_verify_locations(cadata=roots_pem.decode())
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    ctx.set_alpn_protocols(ALPN)
    return ctx


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The SPIFFE ID in the verified peer certificate, or None (no TLS, no certificate, no SPIFFE SAN)."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind == "URI" and value.startswith(SPIFFE_PREFIX):
            return value
    return None


def record_sni(ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _context=None) -> None:
    """A server context's servername callback (also called by `mesh.proxy.gateway_tls`'s): `ssl` shows the
    client's SNI only here, during the handshake, so it is kept on the SSL object until `sni` reads it."""
    if server_name:
        ssl_object.weir_sni = server_name  # type: ignore[union-attr]


def sni(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str:
    """The server name the client sent in its ClientHello, "" when it sent none."""
    return getattr(ssl_object, "weir_sni", "")


def principal(spiffe_id: str | None) -> str:
    """Istio's principal form: the SPIFFE ID without "spiffe://" ("cluster.local/ns/x/sa/y")."""
    if not spiffe_id:
        return ""
    return spiffe_id[len(SPIFFE_PREFIX):] if spiffe_id.startswith(SPIFFE_PREFIX) else spiffe_id


def check_peer(ssl_object, expected: tuple[str, ...] | list[str]) -> str | None:
    """None when the peer's SPIFFE ID is one of `expected` (any when empty), else why not."""
    seen = peer_identity(ssl_object)
    if seen is None:
        return "peer certificate carries no SPIFFE identity"
    if expected and seen not in expected:
        return f"peer identity {seen} is not {' or '.join(expected)}"
    return None


def _write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically (created private: never world-readable, not even briefly)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
