"""Traffic mirroring (Istio `mirror` / `mirrors`): a fire-and-forget copy of a request to another cluster.

The copy goes out when the original's first try does, with "-shadow" appended to its Host (as Envoy
does), through the same keep-alive pools. Its answer is read and thrown away; its failures are counted,
never seen by the caller. Copies in flight are bounded (`MAX_MIRRORS_IN_FLIGHT`) and each is cut after
`MIRROR_TIMEOUT_S`, so a slow mirror target cannot hold memory or sockets: past the bound a copy is
skipped and counted (`weir_mirror_overflow_total`); `weir_mirror_requests_active` is the number in flight.
A copy's connections are the mirror cluster's, as the original's are the route's: they count against its
`maxConnections` and `maxRequestsPerConnection` and the pool's cap on TLS handshakes in flight
(`mesh.proxy.pool.MAX_TLS_CONNECTING`), and one a copy frees goes first to a request waiting for it. Where an
original would wait for a connection (or take another host's idle one), a copy is dropped: counted in
`weir_mirror_overflow_total`, and at the connection limit in `weir_circuit_breaker_overflow_total{kind=
"connections"}` as well.

Example: a ratings route to v1 with `mirror: {host: ratings, subset: v2}` and no percentage sends every
request to v1 (whose answer the caller gets) and a copy with `Host: ratings-shadow:9080` to v2.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mesh.proxy import replies
from mesh.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange
    from mesh.proxy.forwarding import Forwarding
    from mesh.proxy.pool import EndpointPool
    from mesh.view import model

# Mirror copies in flight per proxy: bounds memory and sockets spent on a slow or dead mirror target.
MAX_MIRRORS_IN_FLIGHT = 256
# A copy still unanswered after this is cut: the mirror target must not pin connections.
MIRROR_TIMEOUT_S = 10.0


def shadow_host(host: bytes) -> bytes:
    """`ratings:9080` → `ratings-shadow:9080`; `ratings` → `ratings-shadow`."""
    name, sep, port = host.rpartition(b":")
    if sep and port.isdigit() and not name.endswith(b"]"):
        return name + b"-shadow:" + port
    return host + b"-shadow"


class MirrorExchange:
    """The sink for one copy: implements what UpstreamConnection calls on an exchange, keeps nothing."""

    __slots__ = ("forwarding", "pool", "endpoint", "cluster", "out", "is_head", "timer", "done", "upstream",
                 "bytes_sent", "chunked_response")

    def __init__(self, forwarding: Forwarding, pool: EndpointPool, cluster, endpoint: model.Endpoint,
                 is_head: bool = False) -> None:
        self.forwarding = forwarding
        self.pool = pool
        self.cluster = cluster
        self.endpoint = endpoint
        self.out: list[bytes] = []  # the answer's body lands here and is dropped at each read
        self.bytes_sent = 0
        self.chunked_response = False
        self.is_head = is_head  # a HEAD's answer ends with its head, whatever length it announces
        self.timer: asyncio.TimerHandle | None = None
        self.done = False
        self.upstream: UpstreamConnection | None = None

    def send(self, data: bytes) -> None:
        loop = self.forwarding.loop
        self.timer = loop.call_later(MIRROR_TIMEOUT_S, self._timed_out)
        pool, cluster = self.pool, self.cluster
        counters = self.forwarding.runtime.counters
        conn = pool.acquire(loop.time()) if cluster is None else cluster.take(pool, loop.time())
        if conn is not None:
            counters.inc("mirror_requests_total")
            self.upstream = conn
            conn.send(self, data)
            return
        if not pool.may_connect() or cluster.breaker.connections >= cluster.spec.pool.max_connections:
            # A copy never waits: with the pool's TLS handshakes at their cap, or the mirror cluster at its
            # maxConnections, it is dropped and counted (an original request would queue here).
            counters.inc("mirror_overflow_total")
            if pool.may_connect():
                counters.inc("circuit_breaker_overflow_total", cluster=cluster.spec.name, kind="connections")
            self._end(failed=False)
            return
        counters.inc("mirror_requests_total")  # copies sent (or being connected for), not those dropped
        pool.opening()
        if pool.origin is not None:
            pool.connecting += 1
        cluster.breaker.connections += 1  # given back when the connection closes (UpstreamConnection.cluster)
        task = loop.create_task(self.forwarding.runtime.origination.open(
            loop, pool, lambda: UpstreamConnection(pool, cluster), self.endpoint,
            cluster.spec.pool.connect_timeout_s))
        task.add_done_callback(lambda done: self._connected(done, data))

    def _connected(self, done: asyncio.Task, data: bytes) -> None:
        pool = self.pool
        if pool.origin is not None:  # a TLS connect ended: requests waiting for one may go on
            pool.connecting -= 1
            if pool.waiting:
                pool.wake()
        if done.cancelled() or done.exception() is not None:
            pool.active -= 1
            self.cluster.connection_closed()
            self._end(failed=True)
            return
        _, conn = done.result()
        conn.opened_at = self.forwarding.loop.time()
        if self.done:
            self.forwarding.give_back(conn, True)
            return
        self.upstream = conn
        conn.send(self, data)

    # -- what UpstreamConnection calls ---------------------------------------------------------------
    def response_head(self, status: int, raw: bytes, keep_alive: bool) -> None:
        if status >= 500:
            self.forwarding.runtime.counters.inc("mirror_failed_total")
        if self.is_head and self.upstream is not None:
            self.upstream.head_response_done(self, keep_alive)

    def response_complete(self, upstream: UpstreamConnection, keep_alive: bool) -> None:
        self.upstream = None
        self.forwarding.give_back(upstream, keep_alive)
        self._end(failed=False)

    def upstream_failed(self, upstream: UpstreamConnection, error: replies.ProxyError) -> None:
        self.upstream = None
        self.forwarding.give_back(upstream, False)
        self._end(failed=True)

    def flush(self) -> None:
        self.out.clear()

    def pause_downstream_reading(self) -> None:
        pass

    def resume_downstream_reading(self) -> None:
        pass

    # -- end -----------------------------------------------------------------------------------------
    def _timed_out(self) -> None:
        self.timer = None
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.exchange = None
            self.forwarding.give_back(upstream, False)
        self._end(failed=True)

    def _end(self, failed: bool) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        runtime = self.forwarding.runtime
        runtime.mirrors_in_flight -= 1
        if failed:
            runtime.counters.inc("mirror_failed_total")


def send_copies(forwarding: Forwarding, exchange: Exchange) -> None:
    """Copies of `exchange` to each of its route's mirrors, by percentage; called at its first try."""
    runtime = forwarding.runtime
    view = runtime.view
    route = exchange.target.route
    for mirror in route.spec.mirrors:
        if mirror.percent < 100.0 and view.rng.random() * 100.0 >= mirror.percent:
            continue
        if not exchange.request_complete or not exchange.replayable:
            runtime.counters.inc("mirror_skipped_total")  # a streamed body we did not keep cannot be copied
            continue
        if runtime.mirrors_in_flight >= MAX_MIRRORS_IN_FLIGHT:
            runtime.counters.inc("mirror_overflow_total")
            continue
        cluster = view.clusters.get(mirror.cluster)
        endpoint = cluster.pick() if cluster is not None else None
        if endpoint is None:
            runtime.counters.inc("mirror_failed_total")
            continue
        runtime.mirrors_in_flight += 1
        head = exchange.request_head.replace(b"\r\nhost: " + exchange.host_header + b"\r\n",
                                             b"\r\nhost: " + shadow_host(exchange.host_header) + b"\r\n", 1)
        body = b"".join(exchange._frame(chunk) for chunk in exchange.body)
        if exchange.chunked_request:
            body += b"0\r\n\r\n"
        pool = runtime.origination.pool(cluster, endpoint)  # mTLS to a sidecar, as the original would be
        MirrorExchange(forwarding, pool, cluster, endpoint, exchange.is_head).send(head + body)
