"""Route selection: view → compiled tables; request → route → weighted cluster → endpoint.

`CompiledView` is built once per received view (regexes compiled, domains indexed, balancers made) and
swapped in by one reference assignment. Its decisions are synchronous and use the injected RNG, so tests
pin every pick. Semantics follow Istio/Envoy: virtual host by exact domain, then the longest `*.suffix`,
then `*`; first matching rule wins; weights are relative.
"""

from __future__ import annotations

import bisect
import random
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from mesh.proxy import access, balancer, cors, matching, outlier
from mesh.proxy.headers import HeaderPlan, header_plan
from mesh.proxy.pool import IDLE_TIMEOUT_S, EndpointPool
from mesh.view import model

if TYPE_CHECKING:
    from mesh.proxy.upstream import UpstreamConnection


class CompiledDestination:
    """One weighted destination of a route, with its header operations precompiled: `response` for every
    answer, `cors_response` for one to an origin the route's CORS policy allows (the CORS headers replace
    the upstream's and the route's own)."""

    __slots__ = ("spec", "cluster", "request", "response", "cors_response")

    def __init__(self, route: model.Route, spec: model.WeightedCluster, policy: cors.CompiledCors | None = None
                 ) -> None:
        self.spec = spec
        self.cluster = spec.cluster
        self.request = header_plan(route.request_headers, spec.request_headers)
        self.response = response = header_plan(route.response_headers, spec.response_headers)
        self.cors_response = None
        if policy is not None:
            self.cors_response = (response.overridden(policy.overridden) if response is not None
                                  else HeaderPlan(policy.overridden, b""))

    @property
    def weight(self) -> int:
        return self.spec.weight


class CompiledRoute:
    __slots__ = ("spec", "blocks", "cumulative", "total", "uri_regex", "destinations", "cors")

    def __init__(self, spec: model.Route) -> None:
        self.spec = spec
        rewrite = spec.rewrite
        self.uri_regex = matching.compile_regex(rewrite.uri_regex[0]) if rewrite and rewrite.uri_regex else None
        self.blocks = tuple((matching.compile_route_match(m), m) for m in spec.matches)
        self.cors = cors.CompiledCors(spec.cors) if spec.cors is not None else None
        self.destinations = tuple(CompiledDestination(spec, weighted, self.cors) for weighted in spec.clusters)
        cumulative, total = [], 0
        for weighted in spec.clusters:
            total += max(0, weighted.weight)
            cumulative.append(total)
        self.cumulative = cumulative
        self.total = total

    def match(self, request: matching.RequestHead) -> tuple[bool, model.RouteMatch | None]:
        if not self.blocks:
            return True, None
        for predicate, block in self.blocks:
            if predicate(request):
                return True, block
        return False, None

    def pick(self, rng: random.Random) -> CompiledDestination | None:
        destinations = self.destinations
        if not destinations or self.total <= 0:
            return None
        if len(destinations) == 1:
            return destinations[0]
        return destinations[bisect.bisect_right(self.cumulative, rng.random() * self.total)]


class CompiledVirtualHost:
    __slots__ = ("spec", "routes")

    def __init__(self, spec: model.VirtualHost) -> None:
        self.spec = spec
        self.routes = tuple(CompiledRoute(route) for route in spec.routes)

    def find(self, request: matching.RequestHead) -> tuple[CompiledRoute, model.RouteMatch | None] | None:
        for route in self.routes:
            ok, block = route.match(request)
            if ok:
                return route, block
        return None


class CompiledTable:
    __slots__ = ("name", "exact", "suffixes", "star")

    def __init__(self, spec: model.RouteTable) -> None:
        self.name = spec.name
        self.exact: dict[str, CompiledVirtualHost] = {}
        suffixes: list[tuple[str, CompiledVirtualHost]] = []
        self.star: CompiledVirtualHost | None = None
        for host_spec in spec.virtual_hosts:
            host = CompiledVirtualHost(host_spec)
            for domain in host_spec.domains:
                domain = domain.lower()
                if domain == "*":
                    self.star = self.star or host
                elif domain.startswith("*"):
                    suffixes.append((domain[1:], host))
                else:
                    self.exact.setdefault(domain, host)
        suffixes.sort(key=lambda item: -len(item[0]))
        self.suffixes = tuple(suffixes)

    def virtual_host(self, host: str) -> CompiledVirtualHost | None:
        found = self.exact.get(host)
        if found is not None:
            return found
        for suffix, candidate in self.suffixes:
            if host.endswith(suffix) and len(host) > len(suffix):
                return candidate
        return self.star


class BreakerState:
    """What a cluster's circuit breakers count (mesh.proxy.breaker), per client proxy. One per cluster
    name, handed from each compiled view to the next (`mesh.proxy.runtime.ProxyRuntime.apply`): requests
    and connections opened under the old view still count under the new one, as Envoy keeps a cluster
    that a push did not change; otherwise every push would reset maxConnections and http2MaxRequests."""

    __slots__ = ("connections", "active_requests", "active_retries", "pending", "compact_at")

    def __init__(self) -> None:
        self.connections = 0
        self.active_requests = 0
        self.active_retries = 0
        self.pending: deque = deque()  # (forwarding, exchange, try number) waiting for a connection
        self.compact_at = 64  # `pending`'s length at which departed requests are dropped (mesh.proxy.breaker)

    def __repr__(self) -> str:
        return (f"<BreakerState connections={self.connections} requests={self.active_requests} "
                f"retries={self.active_retries} pending={len(self.pending)}>")


class CompiledCluster:
    """A cluster's balancer, and with outlier detection a second balancer over its healthy hosts."""

    __slots__ = ("spec", "balancer", "detector", "rng", "_healthy", "_healthy_version", "breaker", "peers",
                 "targets", "reuse", "splits_local")

    def __init__(self, spec: model.Cluster, endpoints: tuple[model.Endpoint, ...], rng: random.Random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.rng = rng
        self.balancer = balancer.make_balancer(spec.lb, endpoints, rng)
        self.detector = outlier.OutlierDetector(spec.outlier, endpoints, clock) if spec.outlier else None
        self.splits_local = spec.outlier is not None and spec.outlier.split_local_origin  # connects reported
        self._healthy: balancer.Balancer | None = self.balancer
        self._healthy_version = 0
        # Circuit-breaker state (mesh.proxy.breaker): per client proxy per cluster, as in Envoy.
        self.breaker = BreakerState()
        self.peers: dict[int, tuple] = {}  # id(endpoint) → metric labels (mesh.proxy.runtime.source_peer)
        # (id(weighted destination), id(endpoint)) → its Target, pool looked up: the view's objects, so the ids
        # stay theirs while this cluster lives; cleared with `peers` when auto mTLS starts.
        self.targets: dict[tuple[int, int], Target] = {}
        # What `EndpointPool.acquire` checks of an idle connection beyond the defaults: None when nothing.
        settings = spec.pool
        self.reuse = None if settings.idle_timeout_s is None and settings.max_connection_duration_s is None else (
            settings.idle_timeout_s or IDLE_TIMEOUT_S, settings.max_connection_duration_s)

    def take(self, pool: EndpointPool, now: float) -> UpstreamConnection | None:
        """An idle connection of `pool` this cluster may reuse (its idleTimeout and maxConnectionDuration)."""
        return pool.acquire(now) if self.reuse is None else pool.acquire(now, *self.reuse)

    def pick(self, hash_key: str | None = None, avoid: model.Endpoint | None = None) -> model.Endpoint | None:
        detector = self.detector
        if detector is None:
            return self.balancer.pick(hash_key, avoid)
        detector.sweep(detector.clock())
        if self._healthy_version != detector.version:
            self._rebalance(detector)
        return self._healthy.pick(hash_key, avoid) if self._healthy is not None else None

    def _rebalance(self, detector: outlier.OutlierDetector) -> None:
        self._healthy_version = detector.version
        hosts = detector.healthy(self.balancer.endpoints)
        if hosts is None:
            self._healthy = None
        elif len(hosts) == len(self.balancer.endpoints):
            self._healthy = self.balancer
        else:
            self._healthy = balancer.make_balancer(self.spec.lb, hosts, self.rng)
            if isinstance(self._healthy, balancer.LeastRequest):
                self._healthy.active = self.balancer.active  # one count of requests in flight per host

    def connection_closed(self) -> None:
        self.breaker.connections -= 1
        self.wake_pending()

    def wake_pending(self) -> None:
        """Capacity came back: let the oldest request still waiting for a connection try again."""
        pending = self.breaker.pending
        while pending:
            forwarding, exchange, tries = pending.popleft()
            if not exchange.done and exchange.tries == tries:
                forwarding.loop.call_soon(forwarding.dispatch_pending, exchange, tries)
                return

    def __repr__(self) -> str:
        return f"<Cluster {self.spec.name} {self.balancer!r}>"


class CompiledView:
    """One received view, ready to route. Immutable after construction, except balancer counters."""

    __slots__ = ("spec", "version", "tables", "clusters", "rng", "inbound_cluster", "inbound_targets", "access")

    def __init__(self, spec: model.ProxyView, version: str, rng: random.Random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.version = version
        self.rng = rng
        self.tables = {table.name: CompiledTable(table) for table in spec.route_tables}
        assignments = {a.cluster: a.endpoints for a in spec.endpoints}
        self.clusters = {c.name: CompiledCluster(c, assignments.get(c.name, ()), rng, clock) for c in spec.clusters}
        inbound = self.listener(model.INBOUND)
        self.inbound_cluster = self.clusters.get(inbound.cluster) if inbound is not None and inbound.cluster else None
        self.inbound_targets: dict = {}  # caller's peer header → Target (filled by the runtime)
        self.access = access.compile_access(spec)  # JWT + authorization of received requests; None: nothing to do

    def endpoint_keys(self) -> frozenset[tuple[str, int]]:
        """Every (address, port) this view can send to: the pools worth keeping."""
        return frozenset((e.address, e.port) for a in self.spec.endpoints for e in a.endpoints)

    def listener(self, direction: str, port: int | None = None) -> model.Listener | None:
        for listener in self.spec.listeners:
            if listener.direction == direction and (port is None or listener.port == port):
                return listener
        return None

    def find_route(
        self, table_name: str, request: matching.RequestHead
    ) -> tuple[CompiledRoute, model.RouteMatch | None] | None:
        table = self.tables.get(table_name)
        if table is None:
            return None
        host = table.virtual_host(request.host)
        return host.find(request) if host is not None else None

    def has_virtual_host(self, table_name: str, host: str) -> bool:
        table = self.tables.get(table_name)
        return table is not None and table.virtual_host(host) is not None


class Target:
    """Where one try of a request goes: the route and weighted destination chosen, the cluster and its endpoint,
    and the peer labels its metrics carry (`pool`: the endpoint's EndpointPool, looked up once)."""

    __slots__ = ("cluster", "endpoint", "route", "weighted", "peer", "pool")

    def __init__(self, cluster: CompiledCluster | None, endpoint: model.Endpoint, route: CompiledRoute | None,
                 weighted: CompiledDestination | None, peer: tuple) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self.route = route
        self.weighted = weighted
        self.peer = peer
        self.pool = None  # the endpoint's EndpointPool, looked up once

    def with_endpoint(self, endpoint: model.Endpoint, peer: tuple) -> Target:
        """The same route and destination, to another endpoint of the cluster (a retry's other host)."""
        return Target(self.cluster, endpoint, self.route, self.weighted, peer)
