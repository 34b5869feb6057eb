"""Per-listener forwarding: decide where an exchange goes, build what is sent, and account for it.

`Forwarding.start` is the sync decision step (route → weighted cluster → endpoint, or a local reply);
`connect` is the only place that awaits (opening a new upstream connection, as a task, only when the pool
has no idle one). Header rewriting follows Envoy: hop-by-hop headers dropped, `x-request-id` added,
Istio header operations applied (route level, then destination level). Retries and the route and per-try
timeouts are `mesh.proxy.retrying`'s, a base of `Forwarding`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mesh.proxy import access, breaker, cors, deadlines, fault, mirror, replies, retry
from mesh.proxy import headers as hdr
from mesh.proxy.retrying import RetriesAndTimeouts
from mesh.proxy.routing import Target
from mesh.proxy.upstream import UpstreamConnection
from mesh.view import model

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange
    from mesh.proxy.runtime import ProxyRuntime

CONNECT_TIMEOUT_S = 10.0  # Istio's default connectionPool.tcp.connectTimeout


class Forwarding(RetriesAndTimeouts):
    __slots__ = ("runtime", "direction", "table", "loop", "deadlines", "guarded", "originates")

    def __init__(self, runtime: ProxyRuntime, direction: str, table: str | None = None) -> None:
        self.runtime = runtime
        self.direction = direction
        self.table = table  # gateway listeners route by their own table; outbound by the request's port
        self.loop = asyncio.get_event_loop()
        self.deadlines = deadlines.Deadlines(self)  # reads self.loop when it runs: tests swap the loop
        self.guarded = direction != model.OUTBOUND  # received requests: JWT and authorization may apply
        # Requests sent to other workloads, over mutual TLS once our certificate is there (auto mTLS); an
        # inbound listener's go to the local app, in plaintext always.
        self.originates = direction != model.INBOUND

    # -- decision ------------------------------------------------------------------------------------------
    def refused(self, exchange: Exchange) -> bool:
        """JWT authentication and authorization of a received request; True: it was answered (401/403)."""
        view = self.runtime.view
        return view is not None and view.access is not None and access.refused(self, exchange, view.access)

    def start(self, exchange: Exchange) -> None:
        if self.guarded and self.refused(exchange):
            return
        try:
            target = self._decide(exchange)
        except replies.ProxyError as error:
            exchange.reply_error(error)  # `exchange.target`, when set, labels the reply's metrics
            return
        if target is None:
            return  # answered locally (redirect, direct response)
        exchange.target = target
        route = target.route
        if route is not None and route.spec.fault is not None:
            delay, abort = fault.decide(route.spec.fault, self.runtime.view.rng)
            if delay is not None:
                exchange.flag = "DI"
                exchange.try_timer = self.loop.call_later(delay, self._after_delay, exchange, abort)
                return
            if abort is not None:
                exchange.reply(abort, fault.ABORT_BODY, "FI")
                return
        self._first_try(exchange)

    def _after_delay(self, exchange: Exchange, abort: int | None) -> None:
        exchange.try_timer = None
        if exchange.done:
            return
        if abort is not None:
            exchange.reply(abort, fault.ABORT_BODY, "DI,FI")
            return
        self._first_try(exchange)

    def start_route_timeout(self, exchange: Exchange) -> None:
        """The route timeout bounds every try and the waits between, from the moment the downstream request
        is whole, as Envoy's: at the first try for a request without a body, else when the body ends
        (`request_body_ended`), so that a slow upload does not spend it."""
        route = exchange.target.route if exchange.target is not None else None
        if route is not None and route.spec.timeout_s is not None and exchange.timer is None and not exchange.done:
            exchange.timer = self.deadlines.call_later(route.spec.timeout_s, self._timed_out, exchange)

    def request_body_ended(self, exchange: Exchange) -> None:
        """The downstream request's body is in: its route timeout starts if its first try went out, and the
        try's per-try timeout if it has its connection."""
        if exchange.request_head:
            self.start_route_timeout(exchange)
            self.start_try_timeout(exchange)

    def _first_try(self, exchange: Exchange) -> None:
        target = exchange.target
        cluster = target.cluster
        # Requests in flight are only counted where a limit is set: unlimited clusters skip the bookkeeping.
        if cluster is not None and cluster.spec.pool.max_requests != model.UNLIMITED and not breaker.admit(
                self, exchange, cluster):
            return
        exchange.request_head = hdr.upstream_request_head(self, exchange, target)
        route = target.route
        if route is not None:
            spec = route.spec
            exchange.retries_left = spec.retries.attempts
            if spec.timeout_s is not None and exchange.request_complete:
                self.start_route_timeout(exchange)
            if spec.mirrors:
                mirror.send_copies(self, exchange)
        self._send(exchange)

    def _send(self, exchange: Exchange) -> None:
        """One try: an idle pooled connection, a new one, or a wait for one (circuit breaking)."""
        exchange.try_timer = None
        if exchange.done:
            return
        target = exchange.target
        if exchange.counted is not None:  # a count the try before left (a defence: its end gives it back)
            self.uncount(exchange)
        if target.cluster is not None and target.cluster.balancer.tracks_load:
            self.count(exchange, target.cluster.balancer, target.endpoint)
        self._dispatch(exchange)

    def _dispatch(self, exchange: Exchange) -> None:
        target = exchange.target
        pool = target.pool
        origination = self.runtime.origination
        if pool is None or (self.originates and origination.stale()):
            pool = origination.target_pool(target)
        cluster = target.cluster
        reuse = cluster.reuse if cluster is not None else None  # inlined `CompiledCluster.take`: every request
        conn = pool.acquire(self.loop.time()) if reuse is None else pool.acquire(self.loop.time(), *reuse)
        if conn is not None:
            conn.reused = True
            exchange.attach(conn)
            return
        if cluster is not None and cluster.breaker.connections >= cluster.spec.pool.max_connections:
            conn = breaker.idle_elsewhere(self, exchange, cluster)
            if conn is not None:
                conn.reused = True
                exchange.attach(conn)
            else:
                breaker.wait_for_connection(self, exchange, cluster)
            return
        if not pool.may_connect():  # TLS handshakes at their cap: the next free connection serves it
            pool.wait(self, exchange)
            return
        self.connect(exchange)

    def dispatch_pending(self, exchange: Exchange, tries: int) -> None:
        """A request that waited for a connection (circuit breaker) gets its chance."""
        if exchange.done or exchange.tries != tries:
            if exchange.target is not None and exchange.target.cluster is not None:
                exchange.target.cluster.wake_pending()  # this wake-up was for someone who left
            return
        self._dispatch(exchange)

    def _decide(self, exchange: Exchange) -> Target | None:
        runtime = self.runtime
        view = runtime.view
        head = exchange.head
        if view is None:
            raise replies.NoHealthyUpstream()
        if self.direction == model.INBOUND:
            return runtime.inbound_target(head, exchange.conn.peer_identity)
        table = self.table if self.table is not None else str(head.port)
        found = view.find_route(table, head)
        if found is None:
            if self.direction == model.OUTBOUND and not view.has_virtual_host(table, head.host):
                return self._outside_mesh(exchange)
            raise replies.NoRoute()
        route, block = found
        exchange.block = block
        spec = route.spec
        if spec.direct_response is not None:
            exchange.reply(spec.direct_response.status, spec.direct_response.body.encode())
            return None
        if spec.redirect is not None:
            location = hdr.redirect_location(spec.redirect, head)
            exchange.reply(spec.redirect.status, b"", extra_headers=b"location: " + location + b"\r\n")
            return None
        # CORS before any pick (Istio's filter order: cors, fault, router): a preflight takes no upstream.
        origin_allowed = False
        if route.cors is not None:
            verdict = cors.check(exchange, route.cors)
            if verdict == cors.ANSWERED:
                return None
            origin_allowed = verdict == cors.ALLOWED
        weighted = route.pick(view.rng)
        if weighted is None:
            raise replies.NoRoute()
        cluster = view.clusters.get(weighted.cluster)
        if cluster is None or cluster.spec.kind == model.BLACKHOLE:
            raise replies.NoHealthyUpstream()
        exchange.response_ops = weighted.cors_response if origin_allowed else weighted.response
        if cluster.spec.kind == model.PASSTHROUGH:
            endpoint = model.Endpoint(head.host, head.port)
            return Target(None, endpoint, route, weighted, runtime.source_peer(cluster.spec, endpoint))
        hash_key = hdr.hash_key(cluster.spec.lb, exchange) if cluster.spec.lb.policy == "RING_HASH" else None
        endpoint = cluster.pick(hash_key)
        if endpoint is None:
            exchange.target = Target(cluster, model.Endpoint("", 0), route, weighted,
                                     runtime.source_peer(cluster.spec, None))
            raise replies.NoHealthyUpstream()
        # One Target per destination and endpoint, made once: its pool is then looked up once too (`_dispatch`
        # looks again when auto mTLS has started since, and the targets made before are dropped then).
        key = (id(weighted), id(endpoint))
        target = cluster.targets.get(key)
        if target is None:
            peer = cluster.peers.get(id(endpoint))
            if peer is None:
                peer = cluster.peers[id(endpoint)] = runtime.source_peer(cluster.spec, endpoint)
            target = Target(cluster, endpoint, route, weighted, peer)
            cluster.targets[key] = target
        return target

    def _outside_mesh(self, exchange: Exchange) -> Target:
        runtime = self.runtime
        head = exchange.head
        if runtime.view.spec.outbound_policy == "REGISTRY_ONLY":
            raise replies.RegistryOnly()
        cluster = model.Cluster(model.PASSTHROUGH_CLUSTER, kind=model.PASSTHROUGH, service=head.host)
        endpoint = model.Endpoint(head.host, head.port)
        return Target(None, endpoint, None, None, runtime.source_peer(cluster, endpoint))

    # -- I/O -----------------------------------------------------------------------------------------------
    def connect(self, exchange: Exchange) -> None:
        target = exchange.target
        endpoint = target.endpoint
        cluster = target.cluster
        pool = target.pool or self.runtime.origination.pool(cluster, endpoint)
        pool.opening()
        if pool.origin is not None:
            pool.connecting += 1
        if cluster is not None:
            cluster.breaker.connections += 1
        timeout = cluster.spec.pool.connect_timeout_s if cluster is not None else CONNECT_TIMEOUT_S
        # TCP, then TLS when the pool's connections are secured (mesh.proxy.origination): a refused
        # handshake or a peer with the wrong identity fails here, like a refused connection.
        task = self.loop.create_task(self.runtime.origination.open(
            self.loop, pool, lambda: UpstreamConnection(pool, cluster), endpoint, timeout))
        tries = exchange.tries
        task.add_done_callback(lambda done: self._connected(exchange, pool, done, target, tries))

    def _connected(self, exchange: Exchange, pool, done: asyncio.Task, target: Target, tries: int) -> None:
        if pool.origin is not None:  # a TLS connect ended: a request waiting may take a connection or open one
            pool.connecting -= 1
            if pool.waiting:
                pool.wake()
        if tries != exchange.tries:
            # A try that ended while connecting (its retry scheduled): the exchange moved on (its count with it,
            # `_send`); keep a good socket for others.
            if done.cancelled() or done.exception() is not None:
                pool.active -= 1
                if target.cluster is not None:
                    target.cluster.connection_closed()
            else:  # pooled as any freed connection is: a request queued for one is woken
                conn = done.result()[1]
                conn.opened_at = self.loop.time()
                self.give_back(conn, True)
            return
        if done.cancelled() or done.exception() is not None:
            pool.active -= 1
            if target.cluster is not None:
                target.cluster.connection_closed()
            self.uncount(exchange)
            self.runtime.counters.inc("upstream_connect_fail_total")
            self.report(exchange, 503)
            if not exchange.done and exchange.upstream is None and not self.retry(exchange, retry.CONNECT_FAILURE):
                exchange.reply_error(replies.ConnectFailure())
            return
        _, conn = done.result()
        conn.opened_at = self.loop.time()  # established (maxConnectionDuration counts from here)
        if exchange.done:  # the client left while we were connecting: keep the socket for the next one
            self.release(exchange, conn, True)
            return
        exchange.attach(conn)

    def release(self, exchange: Exchange, upstream: UpstreamConnection, reusable: bool) -> None:
        if exchange.counted is not None:
            self.uncount(exchange)
        self.give_back(upstream, reusable)

    def give_back(self, upstream: UpstreamConnection, reusable: bool) -> None:
        """A connection's request is over (an exchange's, or a mirror copy's): back to its pool, or closed
        (also once it served its cluster's maxRequestsPerConnection or lived its maxConnectionDuration);
        either way a request waiting for a connection of that pool or cluster may now go on."""
        cluster = upstream.cluster
        now = self.loop.time()
        if reusable and cluster is not None:
            settings = cluster.spec.pool
            limit = settings.max_requests_per_connection
            max_age = settings.max_connection_duration_s
            reusable = not (limit and upstream.requests >= limit) and (
                max_age is None or now - upstream.opened_at < max_age)
        if upstream.paused and reusable:
            upstream.resume_reading()  # paused for a slow client: its answer is over, the next may differ
        pool = upstream.pool
        pool.release(upstream, reusable, now)
        if pool.waiting and not upstream.closed:
            pool.wake()  # an idle connection for a request waiting on a TLS pool
        if cluster is not None and cluster.breaker.pending and not upstream.closed:
            cluster.wake_pending()  # an idle connection for a request that waits

    @staticmethod
    def count(exchange: Exchange, balancer, endpoint) -> None:
        """A try to `endpoint` starts: counted in LEAST_REQUEST's in-flight until `uncount`, once."""
        if balancer.tracks_load:
            balancer.started(endpoint)
            exchange.counted = (balancer, endpoint)

    @staticmethod
    def uncount(exchange: Exchange) -> None:
        """The try's count ends: when it is released, moved, or ends with no connection (timeout, client gone,
        queue overflow). Idempotent: every way a try ends calls it, one of them counts."""
        counted = exchange.counted
        if counted is not None:
            exchange.counted = None
            counted[0].finished(counted[1])

    # -- accounting ----------------------------------------------------------------------------------------
    def record(self, exchange: Exchange) -> None:
        runtime = self.runtime
        target = exchange.target
        peer = target.peer if target is not None else runtime.local_peer(self.direction, exchange.head,
                                                                          exchange.conn.peer_identity)
        duration_s = runtime.request_clock() - exchange.start
        runtime.stats.record(peer, exchange.status, exchange.flag, duration_s * 1000.0, exchange.body_size,
                             exchange.bytes_sent)
        telemetry = runtime.telemetry
        if telemetry.recording:  # `--telemetry off`: not even the call
            telemetry.record(exchange, self.direction, duration_s)

