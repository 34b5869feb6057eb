"""Circuit breaking through the protocol objects: connection, pending, request and retry limits."""

from __future__ import annotations

import dataclasses

from mesh.proxy import breaker
from mesh.view import model
from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, Proxy, bookinfo_view, settle
from tests.mesh.proxy.test_downstream import GET_BOOKS, OK
from tests.mesh.proxy.test_resilience import UNAVAILABLE, flags, route, step


def limited(routes_kw=None, **pool) -> Proxy:
    view = bookinfo_view(books=(BOOKS_V1,), books_route=route(**(routes_kw or {})))
    limits = model.ConnectionPool(**pool)
    view = dataclasses.replace(view, clusters=tuple(
        dataclasses.replace(c, pool=limits) if c.name == BOOKS else c for c in view.clusters))
    return Proxy(view)


def overflows(proxy: Proxy, kind: str) -> float:
    return proxy.runtime.counters.get("circuit_breaker_overflow_total", cluster=BOOKS, kind=kind)


async def test_the_articles_rule_one_connection_one_waiting_the_rest_overflow():
    proxy = limited(max_connections=1, max_pending_requests=1, max_requests_per_connection=1)
    clients = [proxy.client() for _ in range(3)]
    for client in clients:
        client.send(GET_BOOKS)
    await settle()
    assert len(proxy.upstreams) == 1  # one connection
    (third,) = clients[2].responses()
    assert third.first == "503" and third.header("x-envoy-overloaded") == "true"
    assert b"overflow" in third.body and overflows(proxy, "pending") == 1
    proxy.upstreams[0].respond(OK)
    assert proxy.upstreams[0].transport.closed  # one request per connection: closed, not pooled
    await settle()
    assert len(proxy.upstreams) == 2  # the waiting request got a new connection
    proxy.upstreams[1].respond(OK)
    assert [c.responses()[0].first for c in clients[:2]] == ["200", "200"]
    assert flags(proxy) == [(200, "-"), (503, "UO")]
    cluster = proxy.runtime.view.clusters[BOOKS]
    assert (cluster.breaker.active_requests, cluster.breaker.connections, len(cluster.breaker.pending)) == (0, 0, 0)


async def test_max_requests_in_flight_overflow_at_once():
    proxy = limited(max_requests=1)
    first, second = proxy.client(), proxy.client()
    first.send(GET_BOOKS)
    second.send(GET_BOOKS)
    await settle()
    assert second.responses()[0].first == "503" and overflows(proxy, "requests") == 1
    proxy.upstreams[0].respond(OK)
    third = proxy.client()
    third.send(GET_BOOKS)  # capacity is back
    await settle()
    proxy.upstreams[0].respond(OK)
    assert third.responses()[0].first == "200"


async def test_max_retries_in_flight_stops_retrying():
    proxy = limited(max_retries=0)
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(UNAVAILABLE)  # retriable by default, but no retry budget
    await step(proxy)
    assert [r.first for r in client.responses()] == ["503"] and len(proxy.upstreams) == 1
    assert overflows(proxy, "retries") == 1


async def test_a_waiting_request_whose_route_timed_out_frees_its_place():
    proxy = limited(routes_kw={"timeout_s": 1.0}, max_connections=1, max_pending_requests=1)
    holder, waiter = proxy.client(), proxy.client()
    holder.send(GET_BOOKS)
    waiter.send(GET_BOOKS)
    await settle()
    await step(proxy, 1.5)  # both time out; the waiter never got a connection
    late = proxy.client()
    late.send(GET_BOOKS)
    await settle()
    assert late.responses() == [] or late.responses()[0].first != "503"
    assert overflows(proxy, "pending") == 0


async def test_idle_timeout_from_the_destination_rule_closes_instead_of_reusing():
    proxy = limited(idle_timeout_s=5.0)
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(OK)
    proxy.net.advance(6.0)
    client.send(GET_BOOKS)
    await settle()
    assert len(proxy.upstreams) == 2 and proxy.upstreams[0].transport.closed


async def test_limits_hold_across_a_config_push():
    """Any push recompiles every cluster; requests and connections opened under the old view still count
    under the new one (Envoy keeps an unchanged cluster), or each push would reset the limits."""
    proxy = limited(max_connections=1, max_requests=1)
    first = proxy.client()
    first.send(GET_BOOKS)
    await settle()
    proxy.runtime.apply(proxy.runtime.view.spec, "v2")  # an unrelated change elsewhere: a new view
    second = proxy.client()
    second.send(GET_BOOKS)
    await settle()
    assert [r.first for r in second.responses()] == ["503"] and overflows(proxy, "requests") == 1
    assert len(proxy.upstreams) == 1
    proxy.upstreams[0].respond(OK)
    await settle()
    assert first.responses()[0].first == "200"
    cluster = proxy.runtime.view.clusters[BOOKS]
    assert (cluster.breaker.active_requests, cluster.breaker.connections) == (0, 1)  # pooled: still counted
    third = proxy.client()
    third.send(GET_BOOKS)  # capacity is back, on the same connection
    await settle()
    proxy.upstreams[0].respond(OK)
    assert third.responses()[0].first == "200" and len(proxy.upstreams) == 1


async def test_max_connection_duration_retires_a_connection_at_its_release_and_in_the_pool():
    proxy = limited(max_connection_duration_s=10.0)
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    first = proxy.upstreams[0]
    await step(proxy, 4.0)
    first.respond(OK)  # 4 s old: pooled
    assert not first.transport.closed
    await step(proxy, 7.0)  # 11 s old, idle in the pool: closed, not reused
    client.send(GET_BOOKS)
    await settle()
    assert first.transport.closed and len(proxy.upstreams) == 2
    second = proxy.upstreams[1]
    await step(proxy, 10.0)
    second.respond(OK)  # 10 s old when its request ends: closed at release
    assert second.transport.closed
    assert [r.first for r in client.responses()] == ["200", "200"]


async def test_requests_whose_clients_left_do_not_pile_up_in_an_unlimited_wait_queue():
    """Istio's default http1MaxPendingRequests is unlimited: behind a stuck upstream, clients that gave up
    must not keep their requests (heads, bodies) queued until a connection frees."""
    proxy = limited(max_connections=1)
    proxy.client().send(GET_BOOKS)  # holds the one connection: its upstream never answers
    await settle()
    cluster = proxy.runtime.view.clusters[BOOKS]
    post = b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 1000\r\n\r\n" + b"b" * 1000
    gone = []
    for i in range(1000):
        client = proxy.client(("10.0.0.7", 1000 + i))
        client.send(post)
        client.conn.connection_lost(None)
        gone.append(client.conn)
    assert len(cluster.breaker.pending) < 2 * breaker.PENDING_COMPACT_AT
    assert all(not exchange.body and not exchange.request_head
               for _, exchange, _ in cluster.breaker.pending)  # what is left holds nothing
    live = [proxy.client(("10.0.0.8", 2000 + i)) for i in range(100)]
    for client in live:
        client.send(GET_BOOKS)
    assert sum(1 for _, e, _ in cluster.breaker.pending if not e.done) == 100  # live ones are all kept


def _books_cluster(view: model.ProxyView, **changes) -> model.ProxyView:
    return dataclasses.replace(view, clusters=tuple(
        dataclasses.replace(c, **changes) if c.name == BOOKS else c for c in view.clusters))


async def test_at_the_connection_limit_an_ejected_hosts_idle_connection_serves_nothing():
    """maxConnections and outlier detection together (the article's step 8): v2 answers 500 and is ejected;
    its keep-alive connection stays idle, and requests at the limit are not moved onto it."""
    from tests.mesh.proxy.fakes import BOOKS_V2

    view = _books_cluster(bookinfo_view(books=(BOOKS_V1, BOOKS_V2), lb=model.LoadBalancer("ROUND_ROBIN")),
                          pool=model.ConnectionPool(max_connections=2),
                          outlier=model.OutlierDetection(consecutive_5xx=1, max_ejection_percent=100.0))
    proxy = Proxy(view)
    first = [proxy.client(), proxy.client()]
    for client in first:
        client.send(GET_BOOKS)
    await settle()
    for upstream in proxy.upstreams:
        upstream.respond(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 3\r\n\r\nerr"
                         if upstream.address == BOOKS_V2.address else OK)
    await settle()
    assert proxy.runtime.view.clusters[BOOKS].detector.ejected == {BOOKS_V2}
    for client in (proxy.client(), proxy.client()):
        client.send(GET_BOOKS)
    await settle()
    assert {u.address for u in proxy.upstreams if u.protocol.exchange is not None} == {BOOKS_V1.address}


def _connects_held(proxy: Proxy):
    """New upstream connections of `proxy` complete only once the returned future is set."""
    import asyncio

    gate = asyncio.get_running_loop().create_future()
    connect = proxy.net.create_connection

    async def held(factory, address, port):
        await gate
        return await connect(factory, address, port)

    proxy.net.create_connection = held
    return gate


async def test_a_connect_that_ends_after_its_try_ended_serves_the_request_queued_for_it():
    """maxConnections 1: the first request's connect is slow and a second request queues at the limit; the
    first client leaves while its connection is still opening. When the connect completes, the queued request
    takes that connection instead of waiting for another."""
    view = _books_cluster(bookinfo_view(books=(BOOKS_V1,), books_route=route()),
                          pool=model.ConnectionPool(max_connections=1))
    proxy = Proxy(view)
    gate = _connects_held(proxy)
    cluster = proxy.runtime.view.clusters[BOOKS]
    leaving, queued = proxy.client(), proxy.client()
    leaving.send(GET_BOOKS)
    queued.send(GET_BOOKS)
    await settle()
    assert len(cluster.breaker.pending) == 1  # the second request waits at the limit
    leaving.conn.connection_lost(None)  # gone while its connection opens
    gate.set_result(None)
    await settle()
    (upstream,) = proxy.upstreams
    assert not cluster.breaker.pending and upstream.requests()  # the queued request went out on it
    upstream.respond(OK)
    assert [r.first for r in queued.responses()] == ["200"]


async def test_a_per_try_timeout_does_not_run_while_the_try_connects():
    """Envoy starts a try's per-try timeout once the connection pool hands it a connection: a connect slower
    than the per-try timeout is bounded by the connect timeout and the route timeout, not cut short. The
    timeout then runs in full from the moment the connection is ready."""
    retries = model.RetryPolicy(attempts=1, per_try_timeout_s=1.0, retry_on=("connect-failure", "reset"))
    proxy = Proxy(_books_cluster(bookinfo_view(books=(BOOKS_V1,), books_route=route(retries=retries)),
                                 pool=model.ConnectionPool(max_connections=1)))
    gate = _connects_held(proxy)
    client = proxy.client()
    client.send(GET_BOOKS)
    await step(proxy, 3.0)  # three per-try timeouts' worth of connecting
    assert proxy.runtime.counters.get("upstream_rq_per_try_timeout_total") == 0 and not client.responses()
    gate.set_result(None)
    await settle()
    (upstream,) = proxy.upstreams
    assert upstream.requests()
    await step(proxy, 0.9)  # the try's own second has not run out
    assert proxy.runtime.counters.get("upstream_rq_per_try_timeout_total") == 0
    await step(proxy, 0.2)
    assert proxy.runtime.counters.get("upstream_rq_per_try_timeout_total") == 1


async def test_a_resend_on_a_fresh_connection_gets_its_own_per_try_timeout_from_that_connection():
    """A pooled connection the server had closed is replaced at once (the request sent again): the per-try
    timeout that started on it is not carried over into the new connect, which is slower than it; the
    request's per-try timeout starts again when the new connection is ready."""
    from tests.mesh.proxy.test_downstream import warm

    proxy = Proxy(bookinfo_view(books=(BOOKS_V1,), books_route=route(
        retries=model.RetryPolicy(attempts=1, per_try_timeout_s=1.0, retry_on=("connect-failure", "reset")))))
    client = proxy.client()
    await warm(proxy, client)
    client.send(GET_BOOKS)
    await settle()
    gate = _connects_held(proxy)
    proxy.upstreams[0].reset()  # closed by the server before any byte of the answer
    await step(proxy, 2.5)  # the new connect takes longer than a per-try timeout
    assert proxy.runtime.counters.get("upstream_rq_per_try_timeout_total") == 0 and not client.responses()
    gate.set_result(None)
    await settle()
    fresh = proxy.upstreams[-1]
    assert [r.first for r in fresh.requests()] == ["GET /books"]
    await step(proxy, 0.9)
    assert proxy.runtime.counters.get("upstream_rq_per_try_timeout_total") == 0
    fresh.respond(OK)
    assert [r.first for r in client.responses()] == ["200"]
    assert sum(1 for u in proxy.upstreams if u.protocol.exchange is not None) == 0


async def test_a_connect_that_completes_after_its_try_was_retried_is_pooled_not_sent_on():
    """A try that ends while its connection is still opening, its retry scheduled: when that connect
    completes during the backoff, the connection goes to the pool and the request is not sent on it (it
    would go out twice, and the connection would stay busy for good)."""
    from mesh.proxy import retry

    proxy = Proxy(_books_cluster(bookinfo_view(books=(BOOKS_V1,), books_route=route(
        retries=model.RetryPolicy(attempts=1, retry_on=("connect-failure",), backoff_base_s=1.0)))))
    gate = _connects_held(proxy)
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    exchange = client.conn.active
    assert client.conn.forwarding.retry(exchange, retry.CONNECT_FAILURE)  # the try given up, its connect pending
    gate.set_result(None)
    await settle()
    (late,) = proxy.upstreams
    assert late.protocol.exchange is None and not late.requests()  # pooled, idle
    await step(proxy, 1.0)  # the backoff: the retry takes the pooled connection
    assert [r.first for r in late.requests()] == ["GET /books"]
    late.respond(OK)
    assert [r.first for r in client.responses()] == ["200"]


async def test_least_request_counts_end_with_every_try_queued_at_the_connection_limit():
    """Istio's default balancer, LEAST_REQUEST, counts each try in flight: a try that waited for a connection
    and ended without one (its client left, its route timed out) must leave no count behind, or the host
    would look busy until the next view."""
    def least_request_proxy(**route_kw) -> Proxy:
        view = _books_cluster(bookinfo_view(books=(BOOKS_V1,), lb=model.LoadBalancer("LEAST_REQUEST"),
                                            books_route=route(**route_kw)),
                              pool=model.ConnectionPool(max_connections=1))
        return Proxy(view)

    proxy = least_request_proxy()
    served, leaving = proxy.client(), proxy.client()
    served.send(GET_BOOKS)
    leaving.send(GET_BOOKS)
    await settle()
    leaving.conn.connection_lost(None)  # gone while queued for the one connection
    proxy.upstreams[0].respond(OK)
    await settle()
    assert proxy.runtime.view.clusters[BOOKS].balancer.in_flight(BOOKS_V1) == 0

    proxy = least_request_proxy(timeout_s=1.0)
    first, queued = proxy.client(), proxy.client()
    first.send(GET_BOOKS)
    queued.send(GET_BOOKS)
    await step(proxy, 1.5)  # both time out, one attached, one still queued
    assert [r.first for r in queued.responses()] == ["504"]
    assert proxy.runtime.view.clusters[BOOKS].balancer.in_flight(BOOKS_V1) == 0


async def test_an_answer_whose_retry_maxretries_refuses_goes_to_the_client_flagged_uo():
    """maxRetries 1: one request holds the retry slot, the other's 503 is passed on, flagged UO (Envoy's
    UpstreamOverflow on a retry the circuit breaker refused)."""
    from tests.mesh.proxy.fakes import BOOKS_V2

    view = _books_cluster(bookinfo_view(books=(BOOKS_V1, BOOKS_V2), books_route=route(),
                                        lb=model.LoadBalancer("ROUND_ROBIN")),
                          pool=model.ConnectionPool(max_retries=1))
    proxy = Proxy(view)
    holder, refused = proxy.client(), proxy.client()
    holder.send(GET_BOOKS)
    refused.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(UNAVAILABLE)  # retried: holds the one retry slot
    proxy.upstreams[1].respond(UNAVAILABLE)  # may not retry: its 503 goes through
    assert [r.first for r in refused.responses()] == ["503"]
    assert flags(proxy) == [(503, "UO")]
    assert proxy.runtime.counters.get("circuit_breaker_overflow_total", cluster=BOOKS, kind="retries") == 1


async def test_each_cluster_keeps_its_own_plaintext_connections_and_limits_to_a_shared_endpoint():
    """Two clusters on one endpoint (e.g. `books` and `books|v1`), plaintext: one cluster's idle connections
    never serve the other outside its maxConnections and maxRequestsPerConnection (Envoy's pools are per
    cluster)."""
    from tests.mesh.proxy.fakes import RATINGS

    view = bookinfo_view(books=(BOOKS_V1,))
    limited = model.ConnectionPool(max_connections=1, max_requests_per_connection=1)
    view = dataclasses.replace(
        view, clusters=tuple(dataclasses.replace(c, pool=limited) if c.name == RATINGS else c for c in view.clusters),
        endpoints=view.endpoints + (model.ClusterEndpoints(RATINGS, (BOOKS_V1,)),))
    proxy = Proxy(view)
    for client in [proxy.client() for _ in range(3)]:
        client.send(GET_BOOKS)
    await settle()
    for upstream in proxy.upstreams:
        upstream.respond(OK)  # books keeps three idle connections to the endpoint
    for client in [proxy.client() for _ in range(3)]:
        client.send(b"GET /r HTTP/1.1\r\nHost: ratings:9080\r\n\r\n")
    await settle()
    busy = [u for u in proxy.upstreams if u.protocol.exchange is not None]
    assert len(busy) == 1 and proxy.runtime.view.clusters[RATINGS].breaker.connections == 1
    busy[0].respond(OK)
    assert busy[0].transport.closed  # its maxRequestsPerConnection, 1, was spent
