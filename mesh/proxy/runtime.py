"""The proxy's shared state: who it is, the view in force, pools, stats and metric label sets.

`apply()` compiles a received view and swaps one reference (`self.view`), so an exchange that already
chose its target finishes on the old view and the next one sees the new view: no lock, no torn state.
Label tuples for metrics are cached per (cluster, endpoint) and per caller (its verified identity too),
never built per request; a connection's (mesh.proxy.stats TcpStats) per listener direction and client
certificate, looked up once per connection.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from mesh.proxy import (
    headers,
    origination,
    pool,
    replies,
    request_limits,
    routing,
    stats,
    telemetry,
    tls,
)
from mesh.proxy.matching import RegexError, RequestHead
from mesh.view import model, wire

UNKNOWN = "unknown"
# Metric label sets cached per caller/destination; a bound keeps a spoofed peer header from growing it.
MAX_CACHED_PEERS = 4096
# An inbound caller's peer metadata (`x-weir-peer`: five Kubernetes names) longer than this is not believed:
# its labels would be the caller's to choose, at any length.
MAX_PEER_HEADER = 1024


@dataclass(frozen=True)
class Identity:
    proxy_id: str
    role: str  # "sidecar" | "gateway"
    namespace: str
    workload: str
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str = "default"

    @property
    def app(self) -> str:
        return self.labels.get("app", self.workload)

    @property
    def version(self) -> str:
        return self.labels.get("version", UNKNOWN)


def _service_parts(fqdn: str) -> tuple[str, str]:
    parts = fqdn.split(".")
    if len(parts) >= 2 and fqdn.endswith(".svc.cluster.local"):
        return parts[0], parts[1]
    return fqdn or UNKNOWN, UNKNOWN


class ProxyRuntime:
    def __init__(self, identity: Identity, rng: random.Random | None = None) -> None:
        self.identity = identity
        self.rng = rng or random.Random()
        self.clock = time.monotonic  # outlier detection's clock; tests set a fake one
        # Requests' start and end, for their duration (metrics, access log, spans): the monotonic clock, not
        # the event loop's, which uvloop caches per iteration at millisecond resolution. Tests set a fake one.
        self.request_clock = time.monotonic
        self.view: routing.CompiledView | None = None
        self.pools = pool.Pools()
        self.stats = stats.RequestStats()
        self.tcp = stats.TcpStats()
        self._tcp_labels: dict[tuple[str, str | None], tuple] = {}
        self.counters = stats.Counters()
        # Access log and spans: off until the server configures them (mesh.proxy.server); a bare runtime
        # (tests, benchmarks) records metrics only.
        self.telemetry = telemetry.Telemetry(identity.workload, None, self.counters, stream=None, keep_recent=False)
        self.connections: set = set()
        self.limits = request_limits.Limits()  # downstream timeouts and body limit (proxy flags)
        self.trusted_proxies = 0  # gateway: X-Forwarded-For entries believed (numTrustedProxies; proxy flag)
        self.mirrors_in_flight = 0  # bounded by mesh.proxy.mirror.MAX_MIRRORS_IN_FLIGHT
        # The workload certificate's SSL contexts (`.server`, `.client`), kept fresh by mesh.proxy.certagent;
        # None when the proxy runs without mesh TLS (a --bootstrap view without --tls-cert).
        self.mesh_tls: tls.MeshTls | None = None
        self.origination = origination.Origination(self)  # upstream TLS per endpoint, and its pools
        self._source_peers: dict[tuple, tuple] = {}
        self._inbound_peers: dict[bytes | None, tuple] = {}
        self._peer_lines: dict[str, bytes] = {}
        ident = identity
        self._self_labels = (ident.workload, ident.namespace, ident.app, ident.version)
        self._peer_prefix = f"{ident.namespace};{ident.workload};{ident.app};{ident.version};"
        self.view_applied_at = 0.0  # wall clock of the last view applied (weir_config_last_applied_timestamp_seconds)
        # Gauges read on scrape: the config in force, the pools, the downstream connections.
        gauge = self.counters.gauge
        gauge("config_last_applied_timestamp_seconds", lambda: self.view_applied_at)
        gauge("upstream_cx_active", lambda: sum(p.active for p in self.pools.by_endpoint.values()))
        gauge("upstream_cx_idle", lambda: sum(len(p.idle) for p in self.pools.by_endpoint.values()))
        gauge("downstream_cx_active", lambda: len(self.connections))
        gauge("mirror_requests_active", lambda: self.mirrors_in_flight)

    # -- view ----------------------------------------------------------------------------------------------
    def apply(self, spec: model.ProxyView, version: str) -> routing.CompiledView:
        model.check_references(spec)
        try:
            compiled = routing.CompiledView(spec, version, self.rng, self.clock)
        except RegexError as exc:  # a regex RE2 cannot compile is NACKed, not fatal
            raise model.ViewError(f"invalid regex: {exc}") from None
        except UnicodeEncodeError as exc:  # a header value HTTP/1.1 cannot carry: NACKed, never a retry loop
            raise model.ViewError(f"not encodable in an HTTP/1.1 header: {exc.object!r}") from None
        self.origination.apply(spec)  # SIMPLE/MUTUAL files that cannot be loaded: ViewError (NACK)
        old = self.view
        if old is not None:  # circuit-breaker counts and outlier state of what stays survive config pushes
            for name, cluster in compiled.clusters.items():
                previous = old.clusters.get(name)
                if previous is None:
                    continue
                cluster.breaker = previous.breaker
                if cluster.detector is not None and previous.detector is not None:
                    cluster.detector.adopt(previous.detector)
        self.view = compiled
        self.view_applied_at = time.time()
        self.counters.inc("config_applied_total")
        self.counters.info("config_info", version=version)  # weir_config_info{version}: the view in force
        self._source_peers.clear()
        self._inbound_peers.clear()  # labels of callers without a peer header name our service: may change
        self._tcp_labels.clear()  # inbound connections' labels name our service too
        return compiled

    def tls_changed(self) -> None:
        """This proxy's certificate arrived (auto mTLS starts): principal labels cached so far are stale."""
        self._source_peers.clear()
        self._inbound_peers.clear()
        self._tcp_labels.clear()
        if self.view is not None:
            self.view.inbound_targets.clear()
            for cluster in self.view.clusters.values():
                cluster.peers.clear()
                # A request decided before (waiting out an injected delay) holds its Target: its pool and
                # labels are chosen again when it is sent (Origination.target_pool).
                for target in cluster.targets.values():
                    target.pool = None
                cluster.targets.clear()

    # -- inbound -------------------------------------------------------------------------------------------
    def inbound_target(self, head: RequestHead, peer_identity: str | None = None) -> routing.Target:
        """`peer_identity`: the caller's verified SPIFFE ID (mutual TLS), None for plaintext."""
        view = self.view
        peer_header = head.header(headers.PEER_HEADER)
        key = peer_header if peer_identity is None else (peer_header, peer_identity)
        cached = view.inbound_targets.get(key)
        if cached is not None:
            return cached
        cluster = view.inbound_cluster
        endpoint = cluster.balancer.pick() if cluster is not None else None
        if endpoint is None:
            raise replies.NoHealthyUpstream()
        target = routing.Target(cluster, endpoint, None, None, self._inbound_peer(peer_header, peer_identity))
        # One local app endpoint (the usual sidecar): the target depends only on the caller; reuse it.
        if len(cluster.balancer.endpoints) == 1 and len(view.inbound_targets) < MAX_CACHED_PEERS:
            view.inbound_targets[key] = target
        return target

    def _inbound_peer(self, header: str | None, peer_identity: str | None = None) -> tuple:
        key = header if peer_identity is None else (header, peer_identity)
        peer = self._inbound_peers.get(key)
        if peer is not None:
            return peer
        fields = header.split(";") if header and len(header) <= MAX_PEER_HEADER else []
        if len(fields) == 5:
            src_ns, src_workload, src_app, src_version, service = fields
        else:
            # A caller outside the mesh: the source is unknown, but the service is still ours (as in Istio).
            src_ns = src_workload = src_app = src_version = UNKNOWN
            service = self._own_service()
        name, namespace = _service_parts(service)
        peer = ("destination", src_workload, src_ns, src_app, src_version, *self._self_labels,
                service, name, namespace, "http", *self._inbound_security(peer_identity))
        if len(self._inbound_peers) < MAX_CACHED_PEERS:
            self._inbound_peers[key] = peer
        return peer

    # -- outbound / gateway --------------------------------------------------------------------------------
    def source_peer(self, cluster: model.Cluster, endpoint: model.Endpoint | None) -> tuple:
        key = (cluster.name, cluster.service, cluster.tls, endpoint)
        peer = self._source_peers.get(key)
        if peer is None:
            dest = (endpoint.workload, endpoint.namespace, endpoint.app, endpoint.version) if endpoint else (
                UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN)
            name, namespace = _service_parts(cluster.service)
            # Istio's client side reports connection_security_policy "unknown"; the principals are ours and
            # the server's (the identity the handshake is checked against) when the connection is mesh mTLS.
            origin = origination.decide(cluster, endpoint, self.origination.ready()) if endpoint else None
            principals = (UNKNOWN, UNKNOWN)
            if origin is not None and origin.mesh:
                mesh = self.mesh_tls
                own = mesh.spiffe_id if mesh is not None and mesh.spiffe_id else UNKNOWN
                principals = (own, origin.peer_principal(endpoint))
            peer = ("source", *self._self_labels, *dest, cluster.service or UNKNOWN, name, namespace, "http",
                    UNKNOWN, *principals)
            if len(self._source_peers) < MAX_CACHED_PEERS:
                self._source_peers[key] = peer
        return peer

    def local_peer(self, direction: str, head: RequestHead, peer_identity: str | None = None) -> tuple:
        """Label set of a request answered before any cluster was chosen (no route, bad request, denied)."""
        if direction == model.INBOUND:
            return self._inbound_peer(head.header(headers.PEER_HEADER), peer_identity)
        return self.source_peer(model.Cluster("none", service=head.host), None)

    def _own_service(self) -> str:
        """The service of this workload's inbound cluster, as the view in force names it."""
        inbound = self.view.inbound_cluster if self.view is not None else None
        return inbound.spec.service if inbound is not None and inbound.spec.service else UNKNOWN

    def _inbound_security(self, peer_identity: str | None) -> tuple[str, str, str]:
        """(connection_security_policy, source_principal, destination_principal) of an inbound connection.
        Istio: mutual_tls when the caller presented a verified certificate; the principals are the two
        certificates' SPIFFE IDs, "unknown" on a plaintext connection."""
        if peer_identity is None:
            return "none", UNKNOWN, UNKNOWN
        mesh = self.mesh_tls
        return "mutual_tls", peer_identity, mesh.spiffe_id if mesh is not None and mesh.spiffe_id else UNKNOWN

    def tcp_labels(self, direction: str, peer_identity: str | None = None) -> tuple:
        """The peer tuple (stats.PEER_LABELS order, request_protocol "tcp") of a connection accepted on
        `direction`'s listener, from what is known as it opens; mesh.proxy.stats says what stays unknown."""
        key = (direction, peer_identity if direction == model.INBOUND else None)
        labels = self._tcp_labels.get(key)
        if labels is None:
            if direction == model.INBOUND:
                service = self._own_service()
                labels = ("destination", UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, *self._self_labels,
                          service, *_service_parts(service), "tcp", *self._inbound_security(peer_identity))
            else:
                labels = ("source", *self._self_labels, *(UNKNOWN,) * 7, "tcp", UNKNOWN, UNKNOWN, UNKNOWN)
            if len(self._tcp_labels) < MAX_CACHED_PEERS:  # keyed by client certificates: bound it
                self._tcp_labels[key] = labels
        return labels

    def peer_header(self, target: routing.Target) -> bytes:
        service = target.cluster.spec.service if target.cluster is not None else target.endpoint.address
        line = self._peer_lines.get(service)
        if line is None:
            line = f"x-weir-peer: {self._peer_prefix}{service}\r\n".encode()
            if len(self._peer_lines) < MAX_CACHED_PEERS:  # passthrough hosts come from the app: bound them
                self._peer_lines[service] = line
        return line

    # -- admin ---------------------------------------------------------------------------------------------
    def config_dump(self) -> dict:
        view = self.view
        dump = wire.to_dict(view.spec) if view else None
        if view is not None:  # live health of each endpoint next to the pushed config
            now = self.clock()
            for assignment in dump["endpoints"]:
                cluster = view.clusters.get(assignment["cluster"])
                detector = cluster.detector if cluster is not None else None
                for endpoint, spec in zip(assignment["endpoints"], cluster.balancer.endpoints if cluster else ()):
                    endpoint.update(detector.dump(spec, now) if detector else {"health": "HEALTHY"})
        return {
            "proxy": self.identity.proxy_id,
            "version": view.version if view else None,
            "view": dump,
            "pools": self.pools.dump(),
        }

    def prometheus(self) -> str:
        return "\n".join(self.stats.render() + self.tcp.render() + self.counters.render()
                         + self._outlier_lines()) + "\n"

    def _outlier_lines(self) -> list[str]:
        lines = []
        for name, cluster in sorted(self.view.clusters.items()) if self.view else ():
            detector = cluster.detector
            if detector is None:
                continue
            label = stats.label_text(("cluster",), (name,))
            for key, value in sorted(detector.stats.items()):
                lines.append(f"weir_outlier_detection_{key}_total{{{label}}} {value}")
            lines.append(f"weir_outlier_detection_ejections_active{{{label}}} {len(detector.ejected)}")
        return lines
