"""The compiled per-proxy view: what the control plane sends and a proxy executes.

This is Weir's xDS: listeners, route tables, clusters and endpoints for ONE proxy, already resolved
(no Istio YAML, no short host names, no sourceLabels or gateway bindings left to evaluate). Every type is
a frozen, slotted dataclass so that `new_view == old_view` is the change detector on both sides.
`mesh.control.builder` produces it; `mesh.proxy.routing` compiles it into matchers; `mesh.view.wire`
moves it as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.view.http import (  # noqa: F401 - re-exported: the view's types live in one namespace
    DEFAULT_RETRIES,
    DEFAULT_RETRY_ON,
    FROM_PROTOCOL_DEFAULT,
    FROM_REQUEST_PORT,
    NO_HEADER_OPS,
    Cors,
    DirectResponse,
    Fault,
    HeaderOps,
    KeyMatch,
    Mirror,
    Redirect,
    RetryPolicy,
    Rewrite,
    Route,
    RouteMatch,
    StringMatch,
    WeightedCluster,
)
from mesh.view.security import (  # noqa: F401 - re-exported: the view's types live in one namespace
    DEFAULT_SECURITY,
    AuthzCondition,
    AuthzOperation,
    AuthzPolicy,
    AuthzRule,
    AuthzSource,
    InboundMtls,
    JwtRule,
    Security,
    ServerTls,
    UpstreamTls,
)

# Listener directions. A sidecar has one inbound and one outbound listener; a gateway has one per port.
INBOUND = "inbound"
OUTBOUND = "outbound"
GATEWAY = "gateway"
DIRECTIONS = (INBOUND, OUTBOUND, GATEWAY)

# Cluster kinds: how a cluster finds its hosts.
EDS = "eds"  # endpoints come from the view's endpoint table (registry or STATIC ServiceEntry)
DNS = "dns"  # endpoint addresses are host names resolved when connecting (ServiceEntry DNS)
PASSTHROUGH = "passthrough"  # the request's own host:port (ALLOW_ANY, ServiceEntry resolution NONE)
BLACKHOLE = "blackhole"  # REGISTRY_ONLY: refuse

PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]  # exact names, "*.suffix", or "*"; no ports
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class RouteTable:
    name: str  # outbound: the service port ("9080"); gateway: "http.<port>"
    virtual_hosts: tuple[VirtualHost, ...]


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    direction: str  # INBOUND | OUTBOUND | GATEWAY
    port: int  # for gateways the Gateway server port (80); the proxy maps it to a local port
    route_table: str | None = None  # gateway listeners
    cluster: str | None = None  # inbound: the local app
    tls: tuple[ServerTls, ...] = ()  # gateway: the servers' TLS on this port, chosen by SNI
    https_redirect: bool = False  # gateway: plaintext requests get a 301 to https (server tls.httpsRedirect)


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    policy: str = "ROUND_ROBIN"  # ROUND_ROBIN | LEAST_REQUEST | RANDOM | RING_HASH
    hash_header: str | None = None
    hash_cookie: str | None = None
    hash_cookie_path: str | None = None
    hash_cookie_ttl: float | None = None
    hash_cookie_attributes: tuple[tuple[str, str], ...] = ()  # (name, value) set on a generated cookie
    hash_source_ip: bool = False
    hash_query_parameter: str | None = None
    ring_size: int = 1024


UNLIMITED = 2**32 - 1  # Istio's "no limit" for connection-pool settings


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    """DestinationRule connectionPool, per client proxy per cluster (Envoy circuit breakers)."""

    max_connections: int = UNLIMITED  # tcp.maxConnections
    connect_timeout_s: float = 10.0  # tcp.connectTimeout
    max_pending_requests: int = UNLIMITED  # http.http1MaxPendingRequests
    max_requests: int = UNLIMITED  # http.http2MaxRequests: active requests
    max_requests_per_connection: int = 0  # http.maxRequestsPerConnection; 0 = unlimited
    max_retries: int = UNLIMITED  # http.maxRetries: retries in flight
    idle_timeout_s: float | None = None  # http.idleTimeout
    max_connection_duration_s: float | None = None  # tcp.maxConnectionDuration: reused no longer after it
    # tcp.tcpKeepalive: SO_KEEPALIVE on upstream sockets, with the OS's values where these are None.
    tcp_keepalive: bool = False
    keepalive_time_s: int | None = None
    keepalive_interval_s: int | None = None
    keepalive_probes: int | None = None


DEFAULT_CONNECTION_POOL = ConnectionPool()


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """DestinationRule outlierDetection as Istio sets Envoy's: 0 disables a detector."""

    consecutive_5xx: int = 5
    consecutive_gateway_errors: int = 0
    interval_s: float = 10.0
    base_ejection_time_s: float = 30.0
    max_ejection_percent: float = 10.0
    min_health_percent: float = 0.0  # panic threshold; 0 = never route to ejected hosts
    # splitExternalLocalOriginErrors: failures the proxy sees itself (connect failure, reset, timeout) count
    # in their own detector, `consecutive_local_origin` in a row, not as 503/504.
    split_local_origin: bool = False
    consecutive_local_origin: int = 5


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str  # Istio style: "outbound|9080|v1|books.bookinfo.svc.cluster.local"
    kind: str = EDS
    service: str = ""  # destination FQDN, for metrics
    port: int = 0
    subset: str = ""
    lb: LoadBalancer = field(default_factory=LoadBalancer)
    pool: ConnectionPool = DEFAULT_CONNECTION_POOL
    outlier: OutlierDetection | None = None
    tls: UpstreamTls | None = None  # DestinationRule tls; None = auto mTLS (per endpoint, see Endpoint)


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    workload: str = "unknown"
    namespace: str = "unknown"
    app: str = "unknown"
    version: str = "unknown"
    weight: int = 1
    identity: str = ""  # SPIFFE ID of the workload's sidecar; "" when it has none
    mtls: bool = False  # auto mTLS: its sidecar accepts mutual TLS on this port (PeerAuthentication not DISABLE)


@dataclass(frozen=True, slots=True)
class ClusterEndpoints:
    cluster: str
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class ProxyView:
    proxy: str
    listeners: tuple[Listener, ...] = ()
    route_tables: tuple[RouteTable, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    endpoints: tuple[ClusterEndpoints, ...] = ()
    outbound_policy: str = "ALLOW_ANY"  # or REGISTRY_ONLY
    security: Security = DEFAULT_SECURITY


class ViewError(ValueError):
    """A view that is well-formed JSON but not executable; the proxy NACKs it."""


def check_references(view: ProxyView) -> None:
    """Refuse a view whose parts point at names it does not define (a proxy NACKs such a view)."""
    clusters = {c.name for c in view.clusters} | {PASSTHROUGH_CLUSTER, BLACKHOLE_CLUSTER}
    tables = {t.name for t in view.route_tables}
    for listener in view.listeners:
        if listener.route_table and listener.route_table not in tables:
            raise ViewError(f"listener {listener.name}: unknown route table {listener.route_table}")
        if listener.cluster and listener.cluster not in clusters:
            raise ViewError(f"listener {listener.name}: unknown cluster {listener.cluster}")
    for table in view.route_tables:
        for host in table.virtual_hosts:
            for route in host.routes:
                for weighted in (*route.clusters, *route.mirrors):
                    if weighted.cluster not in clusters:
                        raise ViewError(
                            f"route {table.name}/{host.name}/{route.name}: unknown cluster {weighted.cluster}"
                        )
    for assignment in view.endpoints:
        if assignment.cluster not in clusters:
            raise ViewError(f"endpoints for unknown cluster {assignment.cluster}")
