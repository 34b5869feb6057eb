"""What Weir's data plane enforces today, as data; `unenforced_fields`, which names every field a
resource sets outside that set, and `unenforced_values`, which names every enforced field set to a value
Weir does not act on (a Gateway server it does not serve, a ServiceEntry port it cannot carry), so
`analyze` and `apply` can warn instead of ignoring them silently; and `refuse_unsupported`, for valid
Istio that Weir cannot honour at all and so refuses on apply.

Paths are camelCase without list indices; a path covers everything below it. Traffic-policy paths
are relative to a `trafficPolicy` and apply wherever one appears (DestinationRule and subset level,
and each one's `portLevelSettings` entries).
"""

from __future__ import annotations

from typing import Any

from mesh.api.authorizationpolicy import AuthorizationPolicy
from mesh.api.errors import ConfigError
from mesh.api.gateway import Gateway, Server
from mesh.api.loader import dump
from mesh.api.resource import Resource
from mesh.api.serviceentry import ServiceEntry

_HTTP_MATCH = (
    "uri",
    "headers",
    "method",
    "queryParams",
    "port",
    "sourceLabels",
    "sourceNamespace",
    "gateways",
    "withoutHeaders",
    "ignoreUriCase",
    "authority",
    "scheme",
)

# serviceAccounts become principals (`*/ns/<ns>/sa/<sa>`, any trust domain) in mesh.control.authorization.
_SOURCE = (
    "serviceAccounts",
    "notServiceAccounts",
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
)
_OPERATION = ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")
# spaceDelimitedClaims is not in this list: not enforced yet.
_JWT_RULE = (
    "issuer",
    "audiences",
    "jwks",
    "jwksUri",
    "fromHeaders",
    "fromParams",
    "fromCookies",
    "forwardOriginalToken",
    "outputPayloadToHeader",
    "outputClaimToHeaders",
    "timeout",
)

ENFORCED: dict[str, frozenset[str]] = {
    "VirtualService": frozenset(
        {
            "spec.hosts",
            "spec.gateways",
            "spec.exportTo",
            *(f"spec.http.match.{f}" for f in _HTTP_MATCH),
            "spec.http.route.destination.host",
            "spec.http.route.destination.subset",
            "spec.http.route.destination.port",
            "spec.http.route.weight",
            "spec.http.route.headers.request",
            "spec.http.route.headers.response",
            "spec.http.rewrite.uri",
            "spec.http.rewrite.authority",
            "spec.http.redirect",
            "spec.http.directResponse",
            "spec.http.headers.request",
            "spec.http.headers.response",
            "spec.http.rewrite.uriRegexRewrite",
            # Resilience (mesh.control.resilience). retryRemoteLocalities, retryIgnorePreviousHosts,
            # backoff, exponentialDelay, grpcStatus and http2Error stay unenforced.
            "spec.http.timeout",
            "spec.http.retries.attempts",
            "spec.http.retries.perTryTimeout",
            "spec.http.retries.retryOn",
            "spec.http.fault.delay.fixedDelay",
            "spec.http.fault.delay.percentage",
            "spec.http.fault.delay.percent",
            "spec.http.fault.abort.httpStatus",
            "spec.http.fault.abort.percentage",
            # Mirroring (mesh.control.routes).
            "spec.http.mirror",
            "spec.http.mirrorPercentage",
            "spec.http.mirrorPercent",
            "spec.http.mirrors",
            # Names only label routes: nothing to enforce.
            "spec.http.name",
            "spec.http.match.name",
            "spec.http.match.statPrefix",
        }
    ),
    "DestinationRule": frozenset(
        {
            "spec.host",
            "spec.subsets.name",
            "spec.subsets.labels",
            "spec.exportTo",
            # Same-namespace workloads only (mesh.control.clusters.find_rule).
            "spec.workloadSelector",
        }
    ),
    "Gateway": frozenset(
        {
            "spec.servers.port",
            "spec.servers.hosts",
            "spec.servers.name",
            "spec.selector",
            # Server TLS (mesh.proxy). credentialName is resolved to a local secret by the control plane.
            "spec.servers.tls.mode",
            "spec.servers.tls.serverCertificate",
            "spec.servers.tls.privateKey",
            "spec.servers.tls.caCertificates",
            "spec.servers.tls.credentialName",
            "spec.servers.tls.httpsRedirect",
            "spec.servers.tls.subjectAltNames",
            "spec.servers.tls.minProtocolVersion",
        }
    ),
    "ServiceEntry": frozenset(
        {
            "spec.hosts",
            "spec.ports",
            "spec.location",
            "spec.resolution",
            "spec.endpoints.address",
            "spec.endpoints.ports",
            "spec.endpoints.labels",
            "spec.endpoints.weight",
            "spec.exportTo",
        }
    ),
    # Security kinds: targetRef/targetRefs (waypoints, Gateway API) are parsed but not enforced.
    "PeerAuthentication": frozenset({"spec.selector", "spec.mtls.mode", "spec.portLevelMtls"}),
    "AuthorizationPolicy": frozenset(
        {
            "spec.selector",
            "spec.action",  # CUSTOM is refused on apply, see refuse_unsupported
            *(f"spec.rules.from.source.{f}" for f in _SOURCE),
            *(f"spec.rules.to.operation.{f}" for f in _OPERATION),
            "spec.rules.when",
        }
    ),
    "RequestAuthentication": frozenset({"spec.selector", *(f"spec.jwtRules.{f}" for f in _JWT_RULE)}),
}

# Also enforced per port: every entry applies below `portLevelSettings` too (with its `port`), except
# the top-level-only sections (none enforced yet: tunnel, proxyProtocol, retryBudget).
ENFORCED_TRAFFIC_POLICY: frozenset[str] = frozenset(
    {
        "loadBalancer.simple",
        "loadBalancer.consistentHash.httpHeaderName",
        "loadBalancer.consistentHash.httpCookie",
        "loadBalancer.consistentHash.useSourceIp",
        "loadBalancer.consistentHash.httpQueryParameterName",
        "loadBalancer.consistentHash.ringHash",
        "loadBalancer.consistentHash.minimumRingSize",
        # Circuit breaking and outlier detection (mesh.control.resilience).
        "connectionPool.tcp.maxConnections",
        "connectionPool.tcp.connectTimeout",
        "connectionPool.http.http1MaxPendingRequests",
        "connectionPool.http.http2MaxRequests",
        "connectionPool.http.maxRequestsPerConnection",
        "connectionPool.http.maxRetries",
        "connectionPool.http.idleTimeout",
        "outlierDetection.consecutive5xxErrors",
        "outlierDetection.consecutiveGatewayErrors",
        "outlierDetection.consecutiveErrors",
        "outlierDetection.interval",
        "outlierDetection.baseEjectionTime",
        "outlierDetection.maxEjectionPercent",
        "outlierDetection.minHealthPercent",
        # Client TLS to the destination (mesh.proxy). credentialName and caCrl stay unenforced.
        "tls.mode",
        "tls.sni",
        "tls.subjectAltNames",
        "tls.caCertificates",
        "tls.clientCertificate",
        "tls.privateKey",
        "tls.insecureSkipVerify",
    }
)
_PORT_LEVEL_SECTIONS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")

_POLICY_ROOTS = ("spec.trafficPolicy", "spec.subsets.trafficPolicy")


def _rules(kind: str) -> frozenset[str]:
    rules = set(ENFORCED.get(kind, ()))
    if kind == "DestinationRule":
        for root in _POLICY_ROOTS:
            rules |= {f"{root}.{p}" for p in ENFORCED_TRAFFIC_POLICY}
            rules.add(f"{root}.portLevelSettings.port")
            rules |= {
                f"{root}.portLevelSettings.{p}"
                for p in ENFORCED_TRAFFIC_POLICY
                if p.split(".", 1)[0] in _PORT_LEVEL_SECTIONS
            }
    return frozenset(rules)


def _status(path: str, rules: frozenset[str]) -> str:
    """'yes' if enforced, 'partly' if only some fields below it are, 'no' otherwise."""
    for rule in rules:
        if path == rule or path.startswith(rule + "."):
            return "yes"
    if any(rule.startswith(path + ".") for rule in rules):
        return "partly"
    return "no"


def _walk(value: Any, path: str, shape: str, rules: frozenset[str], out: list[str]) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", shape, rules, out)
        return
    if not isinstance(value, dict):
        return
    for key, child in value.items():
        child_shape = f"{shape}.{key}"
        status = _status(child_shape, rules)
        if status == "no":
            out.append(f"{path}.{key}")
        elif status == "partly":
            _walk(child, f"{path}.{key}", child_shape, rules, out)


def unenforced_fields(resource: Resource) -> list[str]:
    """Concrete paths (e.g. `spec.http[0].corsPolicy`) of fields set but not enforced by Weir."""
    out: list[str] = []
    _walk(dump(resource).get("spec", {}), "spec", "spec", _rules(resource.kind), out)
    return out


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
    elif isinstance(resource, ServiceEntry):
        for i, port in enumerate(resource.spec.ports or ()):
            if port.protocol and port.protocol.upper() not in SERVICE_ENTRY_HTTP_PROTOCOLS:
                out.append((f"spec.ports[{i}].protocol", port.protocol, _PORT_NOT_CARRIED))
    return out


def unsupported(resource: Resource) -> list[tuple[str, str]]:
    """(path, reason) for each part of a valid resource that Weir refuses to apply."""
    if isinstance(resource, AuthorizationPolicy) and resource.spec.action == "CUSTOM":
        return [("spec.action", "CUSTOM (external authorization) is not supported by Weir")]
    return []


def refuse_unsupported(resource: Resource, file: str = "") -> None:
    """Raise ConfigError when `resource` validates but cannot be applied (see `unsupported`).

    `meshctl validate` accepts such a resource, as Istio would; the config store refuses it on apply,
    so it never replaces running config."""
    if problems := unsupported(resource):
        path, message = problems[0]
        raise ConfigError(message, file=file, resource=resource.key, path=path, problems=problems)
