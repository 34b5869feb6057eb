"""Retries, timeouts and fault injection through the real protocol objects, on a fake network and clock."""

from __future__ import annotations

from types import SimpleNamespace

from mesh.view import model
from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, BOOKS_V2, Proxy, bookinfo_view, settle
from tests.mesh.proxy.test_downstream import GET_BOOKS, OK, labels

UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown"
ERROR = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 3\r\n\r\nerr"


def route(**kw) -> model.Route:
    return model.Route("books", clusters=(model.WeightedCluster(BOOKS),), **kw)


def proxy_for(books=(BOOKS_V1,), **route_kw) -> Proxy:
    return Proxy(bookinfo_view(books=books, books_route=route(**route_kw), lb=model.LoadBalancer("ROUND_ROBIN")))


def flags(proxy: Proxy) -> list[tuple[int, str]]:
    return sorted((labels(k)["response_code"], labels(k)["response_flags"]) for k in proxy.runtime.stats.series)


async def step(proxy: Proxy, seconds: float = 1.0) -> None:
    await settle()
    proxy.net.advance(seconds)
    await settle()


async def test_a_503_is_retried_by_default_and_the_success_delivered():
    proxy = proxy_for()
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(UNAVAILABLE)
    await step(proxy)
    proxy.upstreams[-1].respond(OK)
    assert [(r.first, r.body) for r in client.responses()] == [("200", b"ok")]
    assert proxy.runtime.counters.get("upstream_rq_retry_total") == 1
    assert flags(proxy) == [(200, "-")]


async def test_retries_exhausted_pass_the_last_answer_on_with_urx():
    proxy = proxy_for()
    client = proxy.client()
    client.send(GET_BOOKS)
    for _ in range(3):  # first try + Istio's default 2 retries
        await settle()
        proxy.upstreams[-1].respond(UNAVAILABLE)
        await step(proxy)
    (response,) = client.responses()
    assert (response.first, response.body) == ("503", b"down")
    assert flags(proxy) == [(503, "URX")]
    assert proxy.runtime.counters.get("upstream_rq_retry_total") == 2


async def test_a_500_is_not_retried_by_default_but_is_under_5xx():
    default = proxy_for()
    client = default.client()
    client.send(GET_BOOKS)
    await settle()
    default.upstreams[0].respond(ERROR)
    assert [r.first for r in client.responses()] == ["500"]
    custom = proxy_for(retries=model.RetryPolicy(attempts=1, retry_on=("5xx",), retriable_status=()))
    client = custom.client()
    client.send(GET_BOOKS)
    await settle()
    custom.upstreams[0].respond(ERROR)
    await step(custom)
    custom.upstreams[-1].respond(OK)
    assert [r.first for r in client.responses()] == ["200"]


async def test_attempts_zero_means_no_retry():
    proxy = proxy_for(retries=model.RetryPolicy(attempts=0))
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(UNAVAILABLE)
    assert [r.first for r in client.responses()] == ["503"]
    assert flags(proxy) == [(503, "-")]


async def test_a_retry_prefers_another_endpoint():
    proxy = proxy_for(books=(BOOKS_V1, BOOKS_V2))
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    first = proxy.upstreams[0]
    first.respond(UNAVAILABLE)
    await step(proxy)
    second = proxy.upstreams[-1]
    assert (second.address, second.port) != (first.address, first.port)
    second.respond(OK)
    assert [r.first for r in client.responses()] == ["200"]


async def retried_to_the_same_endpoint(retries: model.RetryPolicy, requests: int = 40) -> int:
    """Of `requests` each failing once, how many were retried to the endpoint that failed (random LB; one
    proxy per request, seeded apart, so that each starts with empty pools)."""
    view = bookinfo_view(books=(BOOKS_V1, BOOKS_V2), books_route=route(retries=retries),
                         lb=model.LoadBalancer("RANDOM"))
    same = 0
    for seed in range(requests):
        proxy = Proxy(view, seed=seed)
        client = proxy.client()
        client.send(GET_BOOKS)
        await settle()
        first = proxy.upstreams[-1]
        first.respond(UNAVAILABLE)
        await step(proxy)
        second = proxy.upstreams[-1]
        same += (second.address, second.port) == (first.address, first.port)
        second.respond(OK)
        assert [r.first for r in client.responses()] == ["200"]
    return same


async def test_retry_ignore_previous_hosts_false_lets_a_retry_go_back_to_the_same_endpoint():
    assert await retried_to_the_same_endpoint(model.RetryPolicy()) == 0
    assert 5 <= await retried_to_the_same_endpoint(model.RetryPolicy(avoid_previous_host=False)) <= 35


async def test_a_request_whose_body_was_not_kept_is_not_retried(monkeypatch):
    from mesh.proxy import exchange

    monkeypatch.setattr(exchange, "MAX_REPLAY_BODY", 4)
    proxy = proxy_for()
    client = proxy.client()
    client.send(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 10\r\n\r\n0123456789")
    await settle()
    proxy.upstreams[0].respond(UNAVAILABLE)
    await step(proxy)
    assert [r.first for r in client.responses()] == ["503"] and len(proxy.upstreams) == 1


async def test_per_try_timeout_retries_then_succeeds():
    policy = model.RetryPolicy(attempts=2, per_try_timeout_s=0.5, retry_on=("5xx",))
    proxy = proxy_for(retries=policy)
    client = proxy.client()
    client.send(GET_BOOKS)
    await step(proxy, 0.6)  # the first try hangs past its 0.5 s
    assert proxy.upstreams[0].transport.closed
    await step(proxy, 0.3)  # backoff
    proxy.upstreams[-1].respond(OK)
    assert [r.first for r in client.responses()] == ["200"]
    assert proxy.runtime.counters.get("upstream_rq_per_try_timeout_total") == 1


async def test_route_timeout_is_504_ut_and_bounds_all_retries():
    policy = model.RetryPolicy(attempts=5, per_try_timeout_s=0.4, retry_on=("5xx",))
    proxy = proxy_for(retries=policy, timeout_s=1.0)
    client = proxy.client()
    client.send(GET_BOOKS)
    for _ in range(6):
        await step(proxy, 0.25)
    (response,) = client.responses()
    assert (response.first, response.body) == ("504", b"upstream request timeout")
    assert flags(proxy) == [(504, "UT")]
    # Every try is over: closed, or (connected after its try was abandoned) idle in the pool for others.
    assert all(up.transport.closed or up.protocol.exchange is None for up in proxy.upstreams)
    assert proxy.runtime.pools.by_endpoint[(BOOKS_V1.address, BOOKS_V1.port, BOOKS)].active == 0
    tries = len(proxy.upstreams)
    await step(proxy, 5.0)
    assert len(proxy.upstreams) == tries  # nothing is retried after the route timeout


async def test_route_timeout_is_not_retried_even_when_5xx_is_retriable():
    proxy = proxy_for(retries=model.RetryPolicy(attempts=3, retry_on=("5xx",)), timeout_s=0.5)
    client = proxy.client()
    client.send(GET_BOOKS)
    await step(proxy, 0.6)
    assert [r.first for r in client.responses()] == ["504"] and len(proxy.upstreams) == 1


async def test_fault_abort_answers_without_an_upstream():
    proxy = proxy_for(fault=model.Fault(abort_status=418, abort_percent=100))
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    (response,) = client.responses()
    assert (response.first, response.body) == ("418", b"fault filter abort")
    assert proxy.upstreams == [] and flags(proxy) == [(418, "FI")]


async def test_fault_delay_holds_the_request_then_forwards_it():
    proxy = proxy_for(fault=model.Fault(delay_s=2.0, delay_percent=100))
    client = proxy.client()
    client.send(GET_BOOKS)
    await step(proxy, 1.9)
    assert proxy.upstreams == []
    await step(proxy, 0.2)
    proxy.upstreams[0].respond(OK)
    assert [r.first for r in client.responses()] == ["200"]
    assert flags(proxy) == [(200, "DI")]


async def test_requests_delayed_by_a_fault_when_our_certificate_arrives_are_sent_over_mtls():
    """Targets are made once per destination and endpoint (`CompiledCluster.targets`): those held by requests
    waiting out their delay must not keep the plaintext pools chosen before the certificate came, neither the
    first one sent (which notices the certificate) nor the ones after it."""
    secured = tuple(model.Endpoint(f"10.0.0.1{i}", 9080, f"books-v{i}", "bookinfo", "books", f"v{i}",
                                   identity="spiffe://cluster.local/ns/bookinfo/sa/books", mtls=True) for i in (1, 2))
    proxy = proxy_for(books=secured, fault=model.Fault(delay_s=1.0, delay_percent=100))
    first, second = proxy.client(), proxy.client()
    for _ in secured:  # round robin: one kept-alive plaintext connection to each endpoint
        first.send(GET_BOOKS)
        await step(proxy)
        proxy.upstreams[-1].respond(OK)
    plaintext = list(proxy.upstreams)
    assert len(plaintext) == 2
    first.send(GET_BOOKS)  # decided now, one to each endpoint, sent after their delay
    second.send(GET_BOOKS)
    await settle()
    proxy.runtime.mesh_tls = SimpleNamespace(client=object(), spiffe_id="spiffe://cluster.local/ns/bookinfo/sa/gw")
    await step(proxy)
    assert proxy.runtime.origination.mesh_ready
    assert [len(conn.requests()) for conn in plaintext] == [1, 1]  # neither sent in plaintext on an idle one


async def test_fault_delay_then_abort():
    proxy = proxy_for(fault=model.Fault(delay_s=1.0, delay_percent=100, abort_status=503, abort_percent=100))
    client = proxy.client()
    client.send(GET_BOOKS)
    await step(proxy, 1.1)
    assert [r.first for r in client.responses()] == ["503"] and flags(proxy) == [(503, "DI,FI")]


async def test_fault_with_no_percentage_is_never_injected():
    proxy = proxy_for(fault=model.Fault(delay_s=5.0, abort_status=500))
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(OK)
    assert [r.first for r in client.responses()] == ["200"]


async def test_client_leaving_during_an_injected_delay_sends_nothing():
    proxy = proxy_for(fault=model.Fault(delay_s=2.0, delay_percent=100))
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    client.conn.connection_lost(None)
    await step(proxy, 3.0)
    assert proxy.upstreams == []
    assert all(timer.cancelled for timer in proxy.net.timers)


RATINGS_V2 = model.Endpoint("10.0.0.22", 9080, "ratings-v2", "bookinfo", "ratings", "v2")


def mirrored_proxy(percent: float = 100.0, mirror_pool: model.ConnectionPool | None = None) -> Proxy:
    import dataclasses

    from tests.mesh.proxy.fakes import RATINGS

    view = bookinfo_view(books_route=route(mirrors=(model.Mirror(RATINGS, percent),)))
    clusters = view.clusters
    if mirror_pool is not None:
        clusters = tuple(dataclasses.replace(c, pool=mirror_pool) if c.name == RATINGS else c for c in clusters)
    view = dataclasses.replace(view, clusters=clusters,
                               endpoints=(*view.endpoints, model.ClusterEndpoints(RATINGS, (RATINGS_V2,))))
    return Proxy(view)


async def test_mirror_sends_a_shadow_copy_whose_answer_is_discarded():
    proxy = mirrored_proxy()
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    by_address = {up.address: up for up in proxy.upstreams}
    shadow, primary = by_address[RATINGS_V2.address], by_address[BOOKS_V1.address]
    (copy,) = shadow.requests()
    assert copy.first == "GET /books" and copy.header("host") == "books-shadow:9080"
    shadow.respond(UNAVAILABLE)  # the mirror fails: the caller never knows
    primary.respond(OK)
    assert [r.first for r in client.responses()] == ["200"]
    counters = proxy.runtime.counters
    assert counters.get("mirror_requests_total") == 1 and counters.get("mirror_failed_total") == 1
    assert proxy.runtime.mirrors_in_flight == 0


async def test_a_mirrored_head_request_ends_with_its_answers_head():
    """A HEAD's answer announces a length and sends no body: the copy is done at the head, not when the
    mirror times out, and its connection serves the next copy."""
    proxy = mirrored_proxy()
    client = proxy.client()
    for _ in range(2):
        client.send(b"HEAD /books HTTP/1.1\r\nHost: books:9080\r\n\r\n")
        await settle()
        by_address = {up.address: up for up in proxy.upstreams}
        by_address[RATINGS_V2.address].respond(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        by_address[BOOKS_V1.address].respond(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert proxy.runtime.mirrors_in_flight == 0
    assert sorted(up.address for up in proxy.upstreams) == sorted([BOOKS_V1.address, RATINGS_V2.address])
    assert len(by_address[RATINGS_V2.address].requests()) == 2
    assert proxy.runtime.counters.get("mirror_failed_total") == 0


async def test_mirror_percentage_and_in_flight_bound(monkeypatch):
    from mesh.proxy import mirror

    half = mirrored_proxy(percent=50.0)
    for _ in range(200):
        client = half.client()
        client.send(GET_BOOKS)
    await settle()
    sent = half.runtime.counters.get("mirror_requests_total")
    assert 60 < sent < 140  # 50 % of 200 within a wide band (seeded RNG)
    monkeypatch.setattr(mirror, "MAX_MIRRORS_IN_FLIGHT", 3)
    full = mirrored_proxy()
    for _ in range(5):
        full.client().send(GET_BOOKS)
    await settle()
    assert full.runtime.counters.get("mirror_requests_total") == 3
    assert full.runtime.counters.get("mirror_overflow_total") == 2
    assert "weir_mirror_requests_active 3" in full.runtime.counters.render()  # the copies in flight, scraped


async def test_mirror_copies_count_against_the_mirror_clusters_max_connections():
    """maxConnections 1 on the mirror cluster: the first copy opens its one connection; while it is busy the
    next copy is dropped as an overflow (never queued), and once the connection is gone a copy may open again."""
    from tests.mesh.proxy.fakes import RATINGS

    proxy = mirrored_proxy(mirror_pool=model.ConnectionPool(max_connections=1))
    ratings = proxy.runtime.view.clusters[RATINGS]
    for _ in range(3):
        proxy.client().send(GET_BOOKS)
    await settle()
    shadows = [up for up in proxy.upstreams if up.address == RATINGS_V2.address]
    counters = proxy.runtime.counters
    assert len(shadows) == 1 and ratings.breaker.connections == 1
    assert counters.get("mirror_overflow_total") == 2 and proxy.runtime.mirrors_in_flight == 1
    assert counters.get("mirror_requests_total") == 1  # copies sent; the dropped ones are overflows only
    shadows[0].respond(OK)  # the copy's answer: its connection goes back to the pool, still counted
    assert ratings.breaker.connections == 1 and proxy.runtime.mirrors_in_flight == 0
    shadows[0].reset()  # the server closes it: the cluster may open another
    assert ratings.breaker.connections == 0
    proxy.client().send(GET_BOOKS)
    await settle()
    assert len([up for up in proxy.upstreams if up.address == RATINGS_V2.address]) == 2
    assert counters.get("mirror_overflow_total") == 2


async def test_a_connection_a_mirror_copy_frees_serves_the_request_waiting_for_it():
    """The mirror cluster at maxConnections 1, held by a copy: a request of the cluster's own waits (circuit
    breaking), and gets that connection as soon as the copy's answer is read, as it would from a request."""
    from tests.mesh.proxy.fakes import RATINGS

    proxy = mirrored_proxy(mirror_pool=model.ConnectionPool(max_connections=1))
    proxy.client().send(GET_BOOKS)  # its copy to ratings takes the one connection
    await settle()
    ratings_client = proxy.client()
    ratings_client.send(b"GET /ratings/1 HTTP/1.1\r\nHost: ratings:9080\r\n\r\n")
    await settle()
    (shadow,) = [up for up in proxy.upstreams if up.address == RATINGS_V2.address]
    assert len(shadow.requests()) == 1 and len(proxy.runtime.view.clusters[RATINGS].breaker.pending) == 1
    shadow.respond(OK)  # the copy's answer: the connection is free
    await settle()
    assert [r.first for r in shadow.requests()] == ["GET /books", "GET /ratings/1"]
    shadow.respond(OK)
    assert [r.first for r in ratings_client.responses()] == ["200"]


async def test_a_mirror_connection_is_not_reused_past_max_requests_per_connection():
    proxy = mirrored_proxy(mirror_pool=model.ConnectionPool(max_requests_per_connection=1))
    for _ in range(2):
        proxy.client().send(GET_BOOKS)
        await settle()
        shadows = [up for up in proxy.upstreams if up.address == RATINGS_V2.address]
        shadows[-1].respond(OK)
    assert len(shadows) == 2 and shadows[0].transport.closed  # one request each, as for the original's


async def test_mirror_copies_respect_the_pools_cap_on_tls_handshakes_in_flight():
    from mesh.proxy import pool as pool_mod
    from tests.mesh.proxy.fakes import RATINGS

    proxy = mirrored_proxy()
    mirror_pool = proxy.runtime.origination.pool(proxy.runtime.view.clusters[RATINGS], RATINGS_V2)
    mirror_pool.origin = object()  # as if its connections were TLS: connects count against the cap
    mirror_pool.connecting = pool_mod.MAX_TLS_CONNECTING
    proxy.client().send(GET_BOOKS)
    await settle()
    assert not [up for up in proxy.upstreams if up.address == RATINGS_V2.address]
    assert proxy.runtime.counters.get("mirror_overflow_total") == 1 and proxy.runtime.mirrors_in_flight == 0
    mirror_pool.connecting = pool_mod.MAX_TLS_CONNECTING - 1  # one handshake free: the next copy takes it
    proxy.client().send(GET_BOOKS)
    await settle()
    assert proxy.runtime.counters.get("mirror_overflow_total") == 1  # not dropped this time: it had a slot
    # Its connect ended (this fake origin cannot make a TLS connection): the slot is free again, nothing held.
    assert mirror_pool.connecting == pool_mod.MAX_TLS_CONNECTING - 1 and mirror_pool.active == 0
    assert proxy.runtime.view.clusters[RATINGS].breaker.connections == 0 and proxy.runtime.mirrors_in_flight == 0


async def test_a_mirror_that_never_answers_is_cut_after_its_timeout():
    from mesh.proxy import mirror

    proxy = mirrored_proxy()
    proxy.client().send(GET_BOOKS)
    await settle()
    assert proxy.runtime.mirrors_in_flight == 1
    await step(proxy, mirror.MIRROR_TIMEOUT_S + 1)
    assert proxy.runtime.mirrors_in_flight == 0
    shadow = next(up for up in proxy.upstreams if up.address == RATINGS_V2.address)
    assert shadow.transport.closed


def test_shadow_host():
    from mesh.proxy import mirror

    assert mirror.shadow_host(b"ratings:9080") == b"ratings-shadow:9080"
    assert mirror.shadow_host(b"ratings") == b"ratings-shadow"


async def test_a_retry_gets_its_own_per_try_timeout_not_what_the_failed_try_left():
    """Istio's default retryOn with perTryTimeout 1 s: try 1 answers 503 at 0.5 s, try 2 goes out; try 1's
    per-try deadline (due at 1.0 s) must not cut try 2, whose own runs to about 1.5 s."""
    proxy = proxy_for(books=(BOOKS_V1, BOOKS_V2), retries=model.RetryPolicy(per_try_timeout_s=1.0))
    client = proxy.client()
    client.send(GET_BOOKS)
    await step(proxy, 0.5)
    proxy.upstreams[0].respond(UNAVAILABLE)
    await step(proxy, 0.6)  # t=1.1: past try 1's deadline, within try 2's
    assert client.responses() == [] and len(proxy.upstreams) == 2
    proxy.upstreams[1].respond(OK)
    assert [r.first for r in client.responses()] == ["200"]


async def test_a_stale_per_try_timer_never_sends_a_second_try_beside_the_retry():
    """A 503 just before the per-try deadline, pools warm: the failed try's deadline must not fire during
    the backoff and schedule another try, which would send the request twice and answer the client twice."""
    policy = model.RetryPolicy(attempts=3, per_try_timeout_s=1.0, retry_on=("5xx",), backoff_base_s=0.1,
                               backoff_max_s=1.0)
    proxy = proxy_for(books=(BOOKS_V1, BOOKS_V2), retries=policy)
    warm = [proxy.client() for _ in range(4)]
    for c in warm:
        c.send(GET_BOOKS)
    await settle()
    for upstream in list(proxy.upstreams):
        upstream.respond(OK)
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    (first,) = [u for u in proxy.upstreams if u.protocol.exchange is not None]
    await step(proxy, 0.999)
    first.respond(UNAVAILABLE)
    await step(proxy, 0.3)
    exchange = client.conn.active
    serving = [u for u in proxy.upstreams if u.protocol.exchange is exchange]
    assert len(serving) == 1 and proxy.runtime.counters.get("upstream_rq_retry_total") == 1
    serving[0].respond(OK)
    assert [r.first for r in client.responses()] == ["200"]


async def test_a_retriable_status_code_below_409_is_retried():
    """`retryOn: 404` (retriable-status-codes) retries a 404, as Envoy does for any listed code."""
    policy = model.RetryPolicy(attempts=2, retry_on=("retriable-status-codes",), retriable_status=(404,))
    proxy = proxy_for(books=(BOOKS_V1, BOOKS_V2), retries=policy)
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno")
    await step(proxy)
    assert client.responses() == [] and len(proxy.upstreams) == 2
    assert proxy.runtime.counters.get("upstream_rq_retry_total") == 1


async def test_an_injected_delay_stays_in_the_flags_of_what_ends_the_request_after_it():
    """Envoy lists every flag: the article's step 6 (a 2 s delay, then the route timeout or a client that
    gives up) is logged DI,UT or DI,DC, not UT or DC alone."""
    timed_out = proxy_for(fault=model.Fault(delay_s=1.0, delay_percent=100), timeout_s=0.5)
    timed_out.client().send(GET_BOOKS)
    await step(timed_out, 1.7)  # the delay, then the route timeout with no answer
    assert flags(timed_out) == [(504, "DI,UT")]
    gone = proxy_for(fault=model.Fault(delay_s=2.0, delay_percent=100))
    client = gone.client()
    client.send(GET_BOOKS)
    await step(gone, 2.1)
    client.conn.connection_lost(None)  # the caller gives up while the delayed request is upstream
    await settle()
    assert flags(gone) == [(0, "DI,DC")]


async def test_a_per_try_timeout_starts_when_the_request_is_whole_not_while_it_uploads():
    """Envoy starts a try's per-try timeout once it has its connection and the downstream request is whole:
    a 1 s per-try timeout and an upload that ends at 0.9 s cut the try at about 1.9 s, not at 1 s."""
    proxy = proxy_for(retries=model.RetryPolicy(attempts=0, per_try_timeout_s=1.0))
    client = proxy.client()
    client.send(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 4\r\n\r\n")
    await step(proxy, 0.9)
    assert proxy.upstreams[0].requests()  # the head went out on its connection; the body has not come
    client.send(b"data")
    await step(proxy, 0.5)  # t=1.4: 0.5 s after the end of the request
    assert client.responses() == []
    await step(proxy, 0.6)  # t=2.0
    assert [r.first for r in client.responses()] == ["504"]
    assert proxy.runtime.counters.get("upstream_rq_per_try_timeout_total") == 1


async def test_the_route_timeout_starts_when_the_request_is_whole_not_while_it_uploads():
    """Envoy starts the route timeout at the end of the downstream request: a 1 s timeout and an upload that
    ends at 0.9 s time out at about 1.9 s, not at 1 s."""
    proxy = proxy_for(timeout_s=1.0)
    client = proxy.client()
    client.send(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 4\r\n\r\n")
    await step(proxy, 0.9)
    client.send(b"data")
    await step(proxy, 0.5)  # t=1.4: 0.5 s after the end of the request
    assert client.responses() == []
    await step(proxy, 0.6)  # t=2.0
    assert [r.first for r in client.responses()] == ["504"] and flags(proxy) == [(504, "UT")]
    chunked = proxy_for(timeout_s=1.0)
    client = chunked.client()
    client.send(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndata\r\n")
    await step(chunked, 0.9)
    client.send(b"0\r\n\r\n")
    await step(chunked, 0.5)
    assert client.responses() == []
    await step(chunked, 0.6)
    assert [r.first for r in client.responses()] == ["504"]
