"""Which values of an enforced field Weir's data plane acts on: `dropped_server`, why Weir's gateway does
not serve a Gateway server (it serves plaintext HTTP and TLS-terminating HTTPS only), and
`unenforced_values`, which names every enforced field set to a value Weir accepts but does not act on, or
not quite as Istio does (a dropped Gateway server, a SIMPLE server sharing its port with mutual-TLS ones,
a ServiceEntry port of a protocol its sidecars cannot carry).

The fields themselves are mesh.api.support's; `analyze` (mesh.api.analysis) turns both into WEIR0001
warnings, and mesh.control.gateways drops exactly the servers `dropped_server` names.
"""

from __future__ import annotations

from mesh.api.gateway import CIPHER_SUITES, Gateway, Server, ServerTLSSettings
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
_CIPHER_IGNORED = (
    "ignored, as Istio ignores a suite it does not know; Weir acts on the suite names of Istio's list and on "
    "[a|b] groups of them, not on OpenSSL operators"
)


def _tls_values(tls: ServerTLSSettings) -> list[tuple[str, str, str]]:
    """(field below `tls`, value, why) for protocol versions below TLS 1.2 and cipher suite entries ignored."""
    out = [(field, version, _OLD_PROTOCOL)
           for field, version in (("minProtocolVersion", tls.min_protocol_version),
                                  ("maxProtocolVersion", tls.max_protocol_version))
           if version in ("TLSV1_0", "TLSV1_1")]
    seen: set[str] = set()
    for i, entry in enumerate(tls.cipher_suites or ()):
        names = entry.strip("[]").split("|")
        if any(name not in CIPHER_SUITES for name in names):
            out.append((f"cipherSuites[{i}]", entry, _CIPHER_IGNORED))
        elif seen.issuperset(names):
            out.append((f"cipherSuites[{i}]", entry, "a duplicate: ignored, as Istio does"))
        seen.update(names)
    return out


def unenforced_values(resource: Resource) -> list[tuple[str, str, str]]:
    """(concrete path, value, why) for each enforced field set to a value Weir accepts but does not act on,
    or not quite as Istio does."""
    out: list[tuple[str, str, str]] = []
    if isinstance(resource, Gateway):
        served: dict[int, list[tuple[int, str]]] = {}  # port → (server index, tls mode) of the TLS servers
        for i, server in enumerate(resource.spec.servers):
            if dropped := dropped_server(server):
                field, value, why = dropped
                out.append((f"spec.servers[{i}].{field}", value, why))
            elif server.tls is not None and server.tls.mode:
                served.setdefault(server.port.number, []).append((i, server.tls.mode))
        for modes in served.values():
            if any(mode in _ASKS_CLIENT_CERT for _, mode in modes):
                out.extend((f"spec.servers[{i}].tls.mode", mode, _MIXED_CLIENT_CERTS)
                           for i, mode in modes if mode == "SIMPLE")
        for i, server in enumerate(resource.spec.servers):
            if server.tls is not None:
                out.extend((f"spec.servers[{i}].tls.{field}", value, why)
                           for field, value, why in _tls_values(server.tls))
    elif isinstance(resource, ServiceEntry):
        for i, port in enumerate(resource.spec.ports or ()):
            if port.protocol and port.protocol.upper() not in SERVICE_ENTRY_HTTP_PROTOCOLS:
                out.append((f"spec.ports[{i}].protocol", port.protocol, _PORT_NOT_CARRIED))
    return out
