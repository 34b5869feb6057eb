"""Circuit breaking: Istio's DestinationRule `connectionPool`, enforced per client proxy per cluster.

Envoy's circuit breakers, for HTTP/1.1 upstreams:
- `http2MaxRequests` bounds requests in flight to the cluster;
- `tcp.maxConnections` bounds the connections it opens; a request that finds none idle and none
  allowed waits for one, in a queue bounded by `http1MaxPendingRequests`;
- `maxRetries` bounds retries in flight; `maxRequestsPerConnection` closes a connection after N requests.
Past a bound the request is answered at once: 503, flag UO, `x-envoy-overloaded: true`, and counted
(`weir_circuit_breaker_overflow_total{cluster, kind}` with kind connections / pending / requests /
retries). A waiting request is woken when a connection of its cluster goes idle or closes.

Example (the article's books rule): maxConnections 1, http1MaxPendingRequests 1,
maxRequestsPerConnection 1. Three concurrent requests: the first gets the one connection, the second
waits, the third overflows (503 UO); when the first finishes its connection closes (one request per
connection) and the second opens a new one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesh.proxy import replies

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange
    from mesh.proxy.forwarding import Forwarding
    from mesh.proxy.routing import CompiledCluster
    from mesh.proxy.upstream import UpstreamConnection

OVERLOADED = b"x-envoy-overloaded: true\r\n"
# Entries in a cluster's wait queue past which those whose request ended are dropped, whatever its limit.
PENDING_COMPACT_AT = 64


def overflow(forwarding: Forwarding, exchange: Exchange, cluster: CompiledCluster, kind: str) -> None:
    forwarding.runtime.counters.inc("circuit_breaker_overflow_total", cluster=cluster.spec.name, kind=kind)
    error = replies.Overflow()
    exchange.reply(error.status, error.body.encode(), error.flag, extra_headers=OVERLOADED)


def admit(forwarding: Forwarding, exchange: Exchange, cluster: CompiledCluster) -> bool:
    """A new request to `cluster`: counted in flight until it ends, or refused (False, answered)."""
    if cluster.breaker.active_requests >= cluster.spec.pool.max_requests:
        overflow(forwarding, exchange, cluster, "requests")
        return False
    cluster.breaker.active_requests += 1
    exchange.admitted = cluster
    return True


def admit_retry(forwarding: Forwarding, exchange: Exchange, cluster: CompiledCluster) -> bool:
    """May this exchange retry? Its first retry counts against maxRetries until it ends."""
    if exchange.retrying is not None:
        return True
    if cluster.breaker.active_retries >= cluster.spec.pool.max_retries:
        forwarding.runtime.counters.inc("circuit_breaker_overflow_total", cluster=cluster.spec.name,
                                        kind="retries")
        return False
    cluster.breaker.active_retries += 1
    exchange.retrying = cluster
    return True


def released(exchange: Exchange) -> None:
    """The exchange ended: give back what admit / admit_retry counted."""
    if exchange.admitted is not None:
        exchange.admitted.breaker.active_requests -= 1
        exchange.admitted = None
    if exchange.retrying is not None:
        exchange.retrying.breaker.active_retries -= 1
        exchange.retrying = None


def idle_elsewhere(forwarding: Forwarding, exchange: Exchange, cluster: CompiledCluster) -> UpstreamConnection | None:
    """At the connection limit, an idle connection to another host of the cluster serves this try."""
    origination = forwarding.runtime.origination
    now = forwarding.loop.time()
    target = exchange.target
    ejected = cluster.detector.ejected if cluster.detector is not None else ()
    for endpoint in cluster.balancer.endpoints:
        if endpoint == target.endpoint or endpoint in ejected:  # an ejected host's idle connections stay idle
            continue
        pool = origination.pool(cluster, endpoint)  # the pool of the endpoint's own TLS: never another's
        if not pool.idle:
            continue
        conn = cluster.take(pool, now)
        if conn is not None:
            forwarding.uncount(exchange)
            forwarding.count(exchange, cluster.balancer, endpoint)
            moved = target.with_endpoint(endpoint, forwarding.runtime.source_peer(cluster.spec, endpoint))
            moved.pool = pool
            exchange.target = moved
            return conn
    return None


def wait_for_connection(forwarding: Forwarding, exchange: Exchange, cluster: CompiledCluster) -> None:
    forwarding.runtime.counters.inc("circuit_breaker_overflow_total", cluster=cluster.spec.name,
                                    kind="connections")
    state = cluster.breaker
    pending = state.pending
    if len(pending) >= min(cluster.spec.pool.max_pending_requests, state.compact_at):
        # Requests that gave up (timeout, client gone) still sit in the queue: count only live ones, and drop
        # the departed before they pile up behind a stuck upstream (with no limit set, Istio's default, too).
        # Compacting again only once the queue has doubled keeps it linear under a long live queue.
        live = [(f, e, t) for f, e, t in pending if not e.done and e.tries == t]
        pending.clear()
        pending.extend(live)
        state.compact_at = max(PENDING_COMPACT_AT, 2 * len(live))
    if len(pending) >= cluster.spec.pool.max_pending_requests:
        forwarding.uncount(exchange)
        overflow(forwarding, exchange, cluster, "pending")
        return
    pending.append((forwarding, exchange, exchange.tries))
