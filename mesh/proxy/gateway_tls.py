"""Gateway listeners: TLS termination of Gateway servers (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL) and
httpsRedirect.

A listener's `ServerTls` entries share one port and are chosen by SNI, as Envoy's filter chains are:
exact host, then the longest `*.suffix`, then `*`; no match or no SNI → the first server. Python swaps the
certificate in the handshake (`sni_callback` sets the chosen server's SSLContext), but OpenSSL keeps the
verify mode and protocol range of the context the handshake began with. So the base context asks for a
client certificate when any server wants one (CERT_REQUIRED when all require one, else CERT_OPTIONAL) and
allows the lowest minimum and the lowest maximum of the port's servers (a capped server caps the port:
analyze warns); `check()` then enforces, right after the handshake and before a byte is parsed, what the
chosen server requires (`min_protocol`, `max_protocol`, a client certificate, its SANs, its pinned hashes,
and again its TLS 1.2 `cipher_suites`, which the chosen context already applies in the handshake). A
presented client certificate is verified against the chosen server's roots (its `ca_file`; the mesh root
for ISTIO_MUTUAL): a bad one fails the handshake. OPTIONAL_MUTUAL asks for a certificate and verifies it
the same way, but lets a client that sends none in. ISTIO_MUTUAL serves the gateway's workload
certificate, read at each handshake.

Contexts are built when a view is applied (`compile_listeners`): a missing or bad file is a ViewError,
so the view is NACKed and the previous one keeps serving. A plaintext listener with `https_redirect`
answers every request 301 to `https://<host><path>` (Istio's httpsRedirect; port 80 dropped), after the
gateway's authorization, as Envoy's filter chain orders them.
`mesh.proxy.inbound_tls.Listener` runs the accept path with the `GatewayPolicy` below.
"""

from __future__ import annotations

import hashlib
import ssl
from typing import TYPE_CHECKING

from mesh.proxy import forwarding, inbound_tls, tls
from mesh.view import model, security

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange
    from mesh.proxy.runtime import ProxyRuntime

VERSIONS = {"TLSV1_2": ssl.TLSVersion.TLSv1_2, "TLSV1_3": ssl.TLSVersion.TLSv1_3}
_ORDER = {"TLSv1": 0, "TLSv1.1": 1, "TLSv1.2": 2, "TLSv1.3": 3}
_RANK = {ssl.TLSVersion.TLSv1_2: 2, ssl.TLSVersion.TLSv1_3: 3}
DEFAULT_MIN = ssl.TLSVersion.TLSv1_2  # Envoy's server default
DEFAULT_MAX = ssl.TLSVersion.TLSv1_3
_FILE_MODES = (security.TLS_SIMPLE, security.TLS_MUTUAL, security.TLS_OPTIONAL_MUTUAL)  # certificate files
_CLIENT_CA_MODES = (security.TLS_MUTUAL, security.TLS_OPTIONAL_MUTUAL)  # verify clients against ca_file


class CompiledServer:
    __slots__ = ("spec", "context", "client_cert", "asks_cert", "minimum", "maximum", "ciphers")

    def __init__(self, spec: model.ServerTls) -> None:
        self.spec = spec
        self.minimum = VERSIONS.get(spec.min_protocol, DEFAULT_MIN)
        self.maximum = VERSIONS.get(spec.max_protocol, DEFAULT_MAX)
        if _RANK[self.maximum] < _RANK[self.minimum]:
            raise ValueError(f"maxProtocolVersion {spec.max_protocol} below minProtocolVersion "
                             f"{spec.min_protocol}")
        self.ciphers = frozenset(spec.cipher_suites)  # empty: OpenSSL's default list
        if spec.spki_sha256:
            _spki_sha256(b"")  # the pins' parser imported now, at apply time, not in a handshake
        self.client_cert = spec.mode in (security.TLS_MUTUAL, security.TLS_ISTIO_MUTUAL)  # required
        self.asks_cert = self.client_cert or spec.mode == security.TLS_OPTIONAL_MUTUAL
        self.context: ssl.SSLContext | None = None  # ISTIO_MUTUAL: the workload context, at handshake time
        if spec.mode in _FILE_MODES:
            roots = _read(spec.ca_file) if spec.mode in _CLIENT_CA_MODES and spec.ca_file else None
            if spec.mode in _CLIENT_CA_MODES and not roots:
                raise ValueError(f"{spec.mode} needs ca_file: the roots client certificates must chain to")
            self.context = tls.server_context(spec.cert_file, spec.key_file, roots,
                                              require_client_cert=spec.mode == security.TLS_MUTUAL)
            self.context.minimum_version = self.minimum
            self.context.maximum_version = self.maximum
            if spec.cipher_suites:
                _set_ciphers(self.context, spec.cipher_suites)

    def refusal(self, ssl_object: ssl.SSLObject) -> str | None:
        """What of this server's protocol range and TLS 1.2 suites the connection does not honour: the range
        is the base context's in the handshake (OpenSSL keeps it when SNI switches context); the suites are
        the chosen context's (OpenSSL 3 applies them), checked again here against an OpenSSL that would
        keep the base's. None: all met."""
        version = ssl_object.version() or ""
        rank = _ORDER.get(version, 0)
        if rank < _RANK[self.minimum]:
            return f"protocol {version} below {self.spec.min_protocol}"
        if rank > _RANK[self.maximum]:
            return f"protocol {version} above {self.spec.max_protocol}"
        cipher = ssl_object.cipher()
        if self.ciphers and version == "TLSv1.2" and cipher and cipher[0] not in self.ciphers:
            return f"cipher suite {cipher[0]} not among the server's cipherSuites"
        return None


def _set_ciphers(context: ssl.SSLContext, suites: tuple[str, ...]) -> None:
    """In the order given: a server context prefers its own order, as Envoy does by default."""
    try:
        context.set_ciphers(":".join(suites))
    except ssl.SSLError:
        raise ValueError(f"none of the cipher suites {list(suites)} is available") from None


class ServerTlsSet:
    """The TLS servers of one listener port, with the base context their handshakes start from."""

    __slots__ = ("runtime", "servers", "exact", "suffixes", "star", "context", "by_context")

    def __init__(self, runtime: ProxyRuntime, specs: tuple[model.ServerTls, ...]) -> None:
        self.runtime = runtime
        self.servers = tuple(CompiledServer(spec) for spec in specs)
        self.exact: dict[str, CompiledServer] = {}
        suffixes: list[tuple[str, CompiledServer]] = []
        self.star: CompiledServer | None = None
        for server in self.servers:
            for host in server.spec.hosts:
                host = host.rpartition("/")[2].lower()  # "namespace/host" → host
                if host == "*":
                    self.star = self.star or server
                elif host.startswith("*."):
                    suffixes.append((host[1:], server))
                else:
                    self.exact.setdefault(host, server)
        suffixes.sort(key=lambda item: -len(item[0]))
        self.suffixes = tuple(suffixes)
        self.by_context = {id(s.context): s for s in self.servers if s.context is not None}
        base = self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        base.minimum_version = min((s.minimum for s in self.servers), key=_RANK.__getitem__)
        # The lowest maximum: OpenSSL settles the version on the base range before SNI picks a server, so a
        # capped server on a shared port caps the others (analyze warns) rather than refusing a client that
        # could have used its maximum.
        base.maximum_version = min((s.maximum for s in self.servers), key=_RANK.__getitem__)
        required, asked = [s.client_cert for s in self.servers], [s.asks_cert for s in self.servers]
        base.verify_mode = (
            ssl.CERT_REQUIRED if all(required) else ssl.CERT_OPTIONAL if any(asked) else ssl.CERT_NONE
        )
        base.set_alpn_protocols(tls.ALPN)
        base.sni_callback = self._select

    def pick(self, server_name: str | None) -> CompiledServer:
        if server_name:
            name = server_name.lower()
            found = self.exact.get(name)
            if found is not None:
                return found
            for suffix, server in self.suffixes:
                if name.endswith(suffix):
                    return server
            if self.star is not None:
                return self.star
        return self.servers[0]

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, _base: ssl.SSLContext):
        """OpenSSL's servername callback (called with or without SNI): switch to the chosen server. It is
        the only callback a handshake runs (the chosen context's own is not), so it keeps the SNI too."""
        tls.record_sni(ssl_object, server_name)
        server = self.pick(server_name)
        ctx = server.context
        if ctx is None:
            mesh = self.runtime.mesh_tls
            ctx = mesh.server if mesh is not None else None
            if ctx is None:  # ISTIO_MUTUAL before the gateway has its certificate
                return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        ssl_object.context = ctx
        return None

    def check(self, ssl_object: ssl.SSLObject) -> str | None:
        """What the chosen server requires and the handshake could not enforce; None when it is met."""
        server = self.by_context.get(id(ssl_object.context))
        if server is None:  # the workload context: an ISTIO_MUTUAL server
            server = next((s for s in self.servers if s.context is None), self.servers[0])
        refusal = server.refusal(ssl_object)
        if refusal is not None or not server.asks_cert:
            return refusal
        cert = ssl_object.getpeercert()  # verified against the server's roots when present
        if not cert:
            return "client certificate required" if server.client_cert else None
        wanted = server.spec.subject_alt_names
        if wanted:
            names = {value for _, value in cert.get("subjectAltName", ())}
            if not names.intersection(wanted):
                return f"client certificate names {sorted(names)} are not among {list(wanted)}"
        if server.spec.spki_sha256 or server.spec.cert_sha256:
            return _pin_refusal(ssl_object.getpeercert(binary_form=True), server.spec)
        return None


def _pin_refusal(der: bytes, spec: model.ServerTls) -> str | None:
    """Istio's verifyCertificateHash / verifyCertificateSpki (Envoy's validation context): once the chain and
    SANs pass, the certificate must match a pin of either list, by SHA-256 of its DER or of its public key."""
    if hashlib.sha256(der).hexdigest() in spec.cert_sha256:
        return None
    if spec.spki_sha256 and _spki_sha256(der) in spec.spki_sha256:
        return None
    return "client certificate matches none of the server's pinned hashes"


def _spki_sha256(der: bytes) -> str:
    """SHA-256 (hex) of a DER certificate's SubjectPublicKeyInfo; "" for b"" (only imports the parser)."""
    from cryptography import x509  # a gateway with SPKI pins only: the import costs a proxy ~10 MiB
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if not der:
        return ""
    key = x509.load_der_x509_certificate(der).public_key()
    return hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


class HttpsRedirect(forwarding.Forwarding):
    """Every request: 301 to the same host and path over https (Gateway server tls.httpsRedirect), once the
    gateway's AuthorizationPolicies allow it: Envoy's RBAC filter runs before the router that answers
    `require_tls`, so a denied client gets 403, not the way to the https port."""

    __slots__ = ()

    def start(self, exchange: Exchange) -> None:
        if self.refused(exchange):
            return
        host = exchange.host_header
        if host.endswith(b":80"):
            host = host[:-3]
        location = b"https://" + host + exchange.head.path.encode("latin-1")
        exchange.reply(301, b"", extra_headers=b"location: " + location + b"\r\n")


class GatewayPolicy:
    """How a gateway port secures each connection: its servers' TLS, a redirect, or plain HTTP."""

    __slots__ = ("runtime", "forwarding", "servers", "redirect")

    def __init__(self, runtime: ProxyRuntime, fwd: forwarding.Forwarding) -> None:
        self.runtime = runtime
        self.forwarding = fwd
        self.servers: ServerTlsSet | None = None
        self.redirect: HttpsRedirect | None = None

    def update(self, listener: model.Listener | None, servers: ServerTlsSet | None) -> None:
        self.servers = servers
        redirect = listener is not None and listener.https_redirect and servers is None
        # Its table names the Gateway server port that authorization rules on `ports` compare.
        self.redirect = HttpsRedirect(self.runtime, model.GATEWAY, listener.route_table) if redirect else None

    def decide(self):
        servers = self.servers
        if servers is not None:
            return inbound_tls.TLS, servers.context, self.forwarding, servers.check
        return inbound_tls.PLAIN, None, self.redirect or self.forwarding, None


def compile_listeners(runtime: ProxyRuntime, spec: model.ProxyView,
                      port_map: dict[int, int]) -> dict[int, tuple[model.Listener, ServerTlsSet | None]]:
    """Local port → (gateway listener, its TLS servers or None); ViewError when a server cannot load."""
    out: dict[int, tuple[model.Listener, ServerTlsSet | None]] = {}
    for listener in spec.listeners:
        if listener.direction != model.GATEWAY:
            continue
        servers = None
        if listener.tls:
            try:
                servers = ServerTlsSet(runtime, listener.tls)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise model.ViewError(f"listener {listener.name}: TLS: {exc}") from None
        out[port_map.get(listener.port, listener.port)] = (listener, servers)
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()
