"""Which values of an enforced field Weir's data plane acts on: `dropped_server`, why Weir's gateway does
not serve a Gateway server (it serves plaintext HTTP and TLS-terminating HTTPS only), and
`unenforced_values`, which names every enforced field set to a value Weir accepts but does not act on, or
not quite as Istio does (a dropped Gateway server, a SIMPLE server sharing its port with mutual-TLS ones,
a ServiceEntry port of a protocol its sidecars cannot carry).

The fields themselves are mesh.api.support's; `analyze` (mesh.api.analysis) turns both into WEIR0001
warnings, and mesh.control.gateways drops exactly the servers `dropped_server` names.
"""

from __future__ import annotations

from mesh.api.gateway import CIPHER_SUITES, Gateway, Server, ServerTLSSettings, cipher_names
from mesh.api.resource import Resource
from mesh.api.serviceentry import ServiceEntry

# Gateway servers Weir serves (mesh.control.gateways drops the others): plaintext HTTP, or HTTPS whose TLS
# the gateway terminates. TLS passthrough and TCP/TLS servers would need TCP and SNI routing.
GATEWAY_HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})
GATEWAY_TERMINATING_MODES = frozenset({"SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"})
_PASSTHROUGH_MODES = frozenset({"PASSTHROUGH", "AUTO_PASSTHROUGH"})
# ServiceEntry port protocols a sidecar carries: HTTP only (it answers CONNECT 501, it has no TCP proxy).
SERVICE_ENTRY_HTTP_PROTOCOLS = GATEWAY_HTTP_PROTOCOLS
_SERVER_DROPPED = "this server is not served"
_PORT_NOT_CARRIED = (
    "Weir's sidecars carry HTTP only (no CONNECT tunnel, no TCP proxy): TLS or TCP a client starts itself "
    "cannot pass; HTTP from the app, routed here with TLS originated by a DestinationRule, can"
)


def dropped_server(server: Server) -> tuple[str, str, str] | None:
    """Why Weir's gateway does not serve a Gateway server: (field below the server, its value, why), or
    None when it serves it. `mesh.control.gateways` drops exactly the servers this names."""
    protocol = server.port.protocol.upper()
    if protocol in GATEWAY_HTTP_PROTOCOLS:
        return None
    set_mode = server.tls.mode if server.tls is not None else None
    mode = set_mode or "PASSTHROUGH"  # the proto's zero value
    if protocol == "HTTPS" and mode in GATEWAY_TERMINATING_MODES:
        return None
    if protocol in ("HTTPS", "TLS") and mode in _PASSTHROUGH_MODES:
        value = mode if set_mode else f"{mode} (unset)"
        return "tls.mode", value, f"TLS passthrough needs SNI routing, which Weir lacks: {_SERVER_DROPPED}"
    why = f"Weir's gateway serves HTTP and HTTPS only: {_SERVER_DROPPED}"
    return "port.protocol", server.port.protocol, why


_ASKS_CLIENT_CERT = frozenset({"MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL"})
_MIXED_CLIENT_CERTS = (
    "shares its port with servers that ask for a client certificate, so this one asks too (one TLS context "
    "starts every handshake on a port): a client that sends a certificate here fails the handshake"
)


_OLD_PROTOCOL = "Weir's gateway serves TLS 1.2 and 1.3 only: read as TLSV1_2"
_UNKNOWN_SUITE = "not a suite Istio knows: ignored, as Istio ignores it"
_SUITE_EXPRESSION = (
    "an OpenSSL expression, which Istio passes on to Envoy: Weir acts on suite names and [a|b] groups of "
    "them only, so it is ignored"
)
_PINS_UNUSED = ("pins check client certificates, which only MUTUAL and OPTIONAL_MUTUAL servers verify: "
                "not used")
_SUITES_UNUSED = "ISTIO_MUTUAL servers handshake with the workload certificate's own context: not applied"
_VERSIONS = ("TLSV1_2", "TLSV1_3")  # what Weir's gateway serves; older versions read as TLSV1_2


def _tls_values(tls: ServerTLSSettings) -> list[tuple[str, str, str]]:
    """(field below `tls`, value, why) for protocol versions below TLS 1.2, cipher suite entries ignored, and
    pins or suites set where a mode does not use them."""
    out = [(field, version, _OLD_PROTOCOL)
           for field, version in (("minProtocolVersion", tls.min_protocol_version),
                                  ("maxProtocolVersion", tls.max_protocol_version))
           if version in ("TLSV1_0", "TLSV1_1")]
    if tls.mode not in ("MUTUAL", "OPTIONAL_MUTUAL"):
        out.extend((field, str(pins), _PINS_UNUSED)
                   for field, pins in (("verifyCertificateHash", tls.verify_certificate_hash),
                                       ("verifyCertificateSpki", tls.verify_certificate_spki)) if pins)
    if tls.mode == "ISTIO_MUTUAL" and tls.cipher_suites:
        return [*out, ("cipherSuites", str(tls.cipher_suites), _SUITES_UNUSED)]
    seen: set[str] = set()
    for i, entry in enumerate(tls.cipher_suites or ()):
        names = cipher_names(entry)
        if not CIPHER_SUITES.issuperset(names):
            why = _UNKNOWN_SUITE if entry[:1].isalnum() else _SUITE_EXPRESSION
            out.append((f"cipherSuites[{i}]", entry, why))
        elif seen.issuperset(names):
            out.append((f"cipherSuites[{i}]", entry, "a duplicate: ignored, as Istio ignores it"))
        seen.update(names)
    return out


def _capped_by_port(servers: list[tuple[int, Server]]) -> list[tuple[str, str, str]]:
    """Servers on one port whose maximum TLS version is above the port's lowest: served with that one."""
    def maximum(server: Server) -> str:
        version = server.tls.max_protocol_version if server.tls is not None else None
        return "TLSV1_3" if version in (None, "TLS_AUTO") else version if version in _VERSIONS else "TLSV1_2"
    lowest = min((maximum(server) for _, server in servers), key=_VERSIONS.index)
    why = (f"shares its port with a server whose maximum is {lowest}: one TLS context settles the version "
           "on a port, so this server is served with that maximum")
    return [(f"spec.servers[{i}].tls.maxProtocolVersion", maximum(server), why)
            for i, server in servers if maximum(server) != lowest]


def unenforced_values(resource: Resource) -> list[tuple[str, str, str]]:
    """(concrete path, value, why) for each enforced field set to a value Weir accepts but does not act on,
    or not quite as Istio does."""
    out: list[tuple[str, str, str]] = []
    if isinstance(resource, Gateway):
        served: dict[int, list[tuple[int, Server]]] = {}  # port → (server index, server) of the TLS servers
        for i, server in enumerate(resource.spec.servers):
            if dropped := dropped_server(server):
                field, value, why = dropped
                out.append((f"spec.servers[{i}].{field}", value, why))
            elif server.tls is not None and server.tls.mode:
                served.setdefault(server.port.number, []).append((i, server))
        for servers in served.values():
            if any(server.tls.mode in _ASKS_CLIENT_CERT for _, server in servers):
                out.extend((f"spec.servers[{i}].tls.mode", "SIMPLE", _MIXED_CLIENT_CERTS)
                           for i, server in servers if server.tls.mode == "SIMPLE")
            out.extend(_capped_by_port(servers))
        for i, server in enumerate(resource.spec.servers):
            if server.tls is not None:
                out.extend((f"spec.servers[{i}].tls.{field}", value, why)
                           for field, value, why in _tls_values(server.tls))
    elif isinstance(resource, ServiceEntry):
        for i, port in enumerate(resource.spec.ports or ()):
            if port.protocol and port.protocol.upper() not in SERVICE_ENTRY_HTTP_PROTOCOLS:
                out.append((f"spec.ports[{i}].protocol", port.protocol, _PORT_NOT_CARRIED))
    return out
