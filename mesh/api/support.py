"""What Weir's data plane enforces today, as data (`ENFORCED`, `ENFORCED_TRAFFIC_POLICY`); `unenforced_fields`,
which names every field a resource sets outside that set, so `analyze` and `apply` can warn instead of
ignoring it silently; and `refuse_unsupported`, for valid Istio that Weir cannot honour at all and so
refuses on apply. Which values of an enforced field Weir acts on is mesh.api.enforced_values's.

Paths are camelCase without list indices; a path covers everything below it. Traffic-policy paths
are relative to a `trafficPolicy` and apply wherever one appears (DestinationRule and subset level,
and each one's `portLevelSettings` entries).
"""

from __future__ import annotations

from typing import Any

from mesh.api.authorizationpolicy import AuthorizationPolicy
from mesh.api.errors import ConfigError
from mesh.api.loader import dump
from mesh.api.resource import Resource

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
            # Resilience (mesh.control.resilience). retryRemoteLocalities (Weir's load balancing has no
            # locality priorities), exponentialDelay, grpcStatus and http2Error stay unenforced.
            "spec.http.timeout",
            "spec.http.retries.attempts",
            "spec.http.retries.perTryTimeout",
            "spec.http.retries.retryOn",
            "spec.http.retries.backoff",
            "spec.http.retries.retryIgnorePreviousHosts",
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
            # CORS (mesh.proxy.cors), every field of it.
            "spec.http.corsPolicy",
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
            "spec.servers.tls.maxProtocolVersion",
            "spec.servers.tls.cipherSuites",
            "spec.servers.tls.verifyCertificateSpki",
            "spec.servers.tls.verifyCertificateHash",
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
        "connectionPool.tcp.maxConnectionDuration",
        "connectionPool.tcp.tcpKeepalive",
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
        "outlierDetection.splitExternalLocalOriginErrors",
        "outlierDetection.consecutiveLocalOriginFailures",
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
