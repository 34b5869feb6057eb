"""HTTP/1.1 protocol tests of `DownstreamConnection` + `Exchange` + `UpstreamConnection` over mock transports.

The client side is a `DownstreamConnection` fed bytes by hand; upstream connections come from a fake
connector (tests/mesh/proxy/fakes.py) and are answered by feeding response bytes into their protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from mesh.proxy import downstream, pool, stats, telemetry
from mesh.view import model
from tests.mesh.proxy.fakes import (
    BOOKS,
    BOOKS_V1,
    LOCAL_APP,
    Proxy,
    bookinfo_view,
    fqdn,
    parse_requests,
    requested,
    settle,
)

GET_BOOKS = b"GET /books HTTP/1.1\r\nHost: books:9080\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def labels(key: tuple) -> dict:
    peer, code, flags = key
    return dict(zip(stats.PEER_LABELS + stats.RESPONSE_LABELS, (*peer, code, flags)))


def only_series(proxy: Proxy) -> dict:
    (key,) = proxy.runtime.stats.series
    return labels(key)


async def test_get_keep_alive_then_second_request_reuses_the_pooled_connection():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    (up,) = proxy.upstreams
    assert (up.address, up.port) == (BOOKS_V1.address, BOOKS_V1.port)
    (request,) = up.requests()
    assert request.first == "GET /books"
    assert request.header("host") == "books:9080"
    assert request.header("x-weir-peer") == f"bookinfo;gw-v1;gw;v1;{fqdn('books')}"
    assert len(request.header("x-request-id")) == 36
    up.respond(OK)
    (response,) = client.responses()
    assert (response.first, response.body, response.header("connection")) == ("200", b"ok", None)
    assert not client.transport.closed

    client.send(GET_BOOKS)
    await settle()
    assert len(proxy.upstreams) == 1, "second request must reuse the keep-alive upstream connection"
    assert len(up.requests()) == 2
    up.respond(OK)
    assert [r.first for r in client.responses()] == ["200", "200"]
    books_pool = proxy.runtime.pools.by_endpoint[(BOOKS_V1.address, BOOKS_V1.port, BOOKS)]
    assert repr(books_pool) == "<EndpointPool 10.0.0.11:9080 idle=1 active=0 opened=1 reused=1>"


async def test_pipelined_requests_are_answered_in_order_one_at_a_time():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"GET /a HTTP/1.1\r\nHost: books:9080\r\n\r\nGET /b HTTP/1.1\r\nHost: books:9080\r\n\r\n")
    await settle()
    (up,) = proxy.upstreams
    assert [r.first for r in up.requests()] == ["GET /a"], "the second request waits for the first response"
    up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na")
    await settle()
    assert [r.first for r in up.requests()] == ["GET /a", "GET /b"]
    up.respond(b"HTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nb")
    assert [(r.first, r.body) for r in client.responses()] == [("200", b"a"), ("201", b"b")]
    assert len(proxy.upstreams) == 1


async def test_a_malformed_request_behind_one_in_flight_is_answered_after_it():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS + b"GET / HTTP/1.1\r\nbad header\r\n\r\n")
    await settle()
    assert not client.transport.reading and not client.transport.closed
    proxy.upstreams[0].respond(OK)
    assert [r.first for r in client.responses()] == ["200", "400"]
    assert client.transport.closed


async def test_a_pipelined_request_expecting_100_continue_gets_it_when_its_turn_comes():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS + b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 2\r\n"
                b"Expect: 100-continue\r\n\r\n")
    await settle()
    assert b"100 Continue" not in client.transport.data
    proxy.upstreams[0].respond(OK)
    await settle()
    assert client.transport.data.count(b"HTTP/1.1 100 Continue\r\n\r\n") == 1
    assert client.transport.data.index(b"100 Continue") > client.transport.data.index(b"200 OK")


async def test_pipeline_depth_is_bounded_by_pausing_the_socket():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS * (downstream.MAX_PIPELINED + 1))
    assert not client.transport.reading
    await settle()
    proxy.upstreams[0].respond(OK)
    await settle()
    assert client.transport.reading


@pytest.mark.parametrize("split", [False, True], ids=["body-with-head", "body-after-connect"])
async def test_content_length_body_is_forwarded(split):
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    head = b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 11\r\n\r\n"
    if split:
        client.send(head + b"hello")
        await settle()
        client.send(b" world")
    else:
        client.send(head + b"hello world")
        await settle()
    (request,) = proxy.upstreams[0].requests()
    assert (request.header("content-length"), request.header("transfer-encoding")) == ("11", None)
    assert request.body == b"hello world" and request.complete


async def test_chunked_request_body_is_re_encoded():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await settle()
    client.send(b"6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n")
    (request,) = proxy.upstreams[0].requests()
    assert request.all("transfer-encoding") == ["chunked"]
    assert request.body == b"hello world" and request.complete


@pytest.mark.parametrize("response, body", [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", b"hello"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", b"hello"),
], ids=["content-length", "chunked"])
async def test_framed_responses_keep_the_connection_reusable(response, body):
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    up = proxy.upstreams[0]
    up.respond(response[:30])
    up.respond(response[30:])
    (got,) = client.responses()
    assert got.body == body and got.complete
    assert len(got.all("transfer-encoding") + got.all("content-length")) == 1
    assert up.transport.closed is False and up.protocol.is_usable()


async def test_close_delimited_response_is_completed_at_upstream_eof():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    up = proxy.upstreams[0]
    up.respond(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello ")
    up.respond(b"world")
    up.reset()  # EOF ends a close-delimited body
    (got,) = client.responses()
    assert got.complete and got.body == b"hello world"
    assert got.header("transfer-encoding") == "chunked"
    assert only_series(proxy)["response_flags"] == "-"
    assert not client.transport.closed


async def test_head_response_has_no_body_and_the_connection_is_reused():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"HEAD /books HTTP/1.1\r\nHost: books:9080\r\n\r\n")
    await settle()
    up = proxy.upstreams[0]
    up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
    assert client.transport.data.endswith(b"content-length: 100\r\n\r\n")
    client.transport.clear()
    client.send(GET_BOOKS)
    await settle()
    assert len(proxy.upstreams) == 1
    up.respond(OK)
    assert [r.body for r in client.responses()] == [b"ok"]


@pytest.mark.parametrize("extra", [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nxx", b"HTTP/1.1 2"],
                         ids=["whole-response", "partial"])
async def test_bytes_after_a_complete_response_poison_the_connection_not_the_next_request(extra):
    """The first response is delivered; the stray bytes are never read as the pipelined request's answer."""
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"GET /a HTTP/1.1\r\nHost: books:9080\r\n\r\nGET /b HTTP/1.1\r\nHost: books:9080\r\n\r\n")
    await settle()
    first = proxy.upstreams[0]
    first.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na" + extra)
    await settle()
    assert first.transport.closed and [r.first for r in first.requests()] == ["GET /a"]
    second = proxy.upstreams[1]
    assert [r.first for r in second.requests()] == ["GET /b"]
    second.respond(b"HTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nb")
    assert [(r.first, r.body) for r in client.responses()] == [("200", b"a"), ("201", b"b")]
    assert [p["active"] for p in proxy.runtime.pools.dump()] == [0]


async def test_pipelined_request_after_a_head_with_zero_length_gets_its_own_response():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"HEAD /a HTTP/1.1\r\nHost: books:9080\r\n\r\nGET /b HTTP/1.1\r\nHost: books:9080\r\n\r\n")
    await settle()
    (up,) = proxy.upstreams
    up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    await settle()
    assert [r.first for r in up.requests()] == ["HEAD /a", "GET /b"]
    up.respond(OK)
    assert client.transport.data.count(b"HTTP/1.1 200 OK") == 2
    assert client.transport.data.endswith(b"\r\n\r\nok")


async def test_no_route_is_404_nr_and_keeps_the_connection():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"GET /v2 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n")
    (response,) = client.responses()
    assert (response.first, response.body) == ("404", b"route not found")
    assert not client.transport.closed, "a local reply to a complete GET keeps the connection"
    assert proxy.upstreams == []
    series = only_series(proxy)
    assert (series["reporter"], series["response_code"], series["response_flags"]) == ("source", 404, "NR")
    assert series["destination_service"] == "reviews"
    client.send(GET_BOOKS)
    await settle()
    assert [r.first for r in proxy.upstreams[0].requests()] == ["GET /books"]


async def test_local_reply_before_the_request_body_closes_the_connection():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"POST /v2 HTTP/1.1\r\nHost: reviews:9080\r\nContent-Length: 10\r\n\r\n")
    (response,) = client.responses()
    assert (response.first, response.header("connection")) == ("404", "close")
    assert client.transport.closed


async def test_no_endpoints_is_503_uh_labelled_with_the_destination_service():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"GET / HTTP/1.1\r\nHost: ratings:9080\r\n\r\n")
    (response,) = client.responses()
    assert (response.first, response.body) == ("503", b"no healthy upstream")
    series = only_series(proxy)
    assert (series["response_flags"], series["destination_service"]) == ("UH", fqdn("ratings"))


async def test_connect_failure_is_503_uf_and_frees_the_endpoint():
    proxy = Proxy(bookinfo_view(lb=model.LoadBalancer("LEAST_REQUEST")))
    proxy.net.refused.add((BOOKS_V1.address, BOOKS_V1.port))
    client = proxy.client()
    client.send(GET_BOOKS)
    for _ in range(3):  # Istio's default policy retries connect failures twice, after a jittered backoff
        await settle()
        proxy.net.advance(1.0)
    await settle()
    (response,) = client.responses()
    assert response.first == "503" and b"connection failure" in response.body
    assert only_series(proxy)["response_flags"] == "UF,URX"
    assert proxy.runtime.counters.get("upstream_connect_fail_total") == 3
    assert proxy.runtime.counters.get("upstream_rq_retry_total") == 2
    assert proxy.runtime.pools.by_endpoint[(BOOKS_V1.address, BOOKS_V1.port, BOOKS)].active == 0
    assert proxy.runtime.view.clusters[BOOKS].balancer.in_flight(BOOKS_V1) == 0


async def test_reset_before_headers_on_a_fresh_connection_is_503_uc_without_retry():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].reset()
    await settle()
    (response,) = client.responses()
    assert response.first == "503" and b"connection termination" in response.body
    assert len(proxy.upstreams) == 1
    assert only_series(proxy)["response_flags"] == "UC"


async def warm(proxy: Proxy, client) -> None:
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(OK)
    client.transport.clear()


async def test_reused_connection_closed_before_any_byte_is_retried_once_on_a_fresh_one():
    proxy = Proxy(bookinfo_view(lb=model.LoadBalancer("LEAST_REQUEST")))
    client = proxy.client()
    await warm(proxy, client)
    balancer = proxy.runtime.view.clusters[BOOKS].balancer
    balancer.active[id(BOOKS_V1)] = 3  # other requests in flight
    client.send(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 4\r\n\r\nbody")
    await settle()
    stale = proxy.upstreams[0]
    stale.reset()
    await settle()
    assert len(proxy.upstreams) == 2
    fresh = proxy.upstreams[1]
    (resent,) = fresh.requests()
    assert (resent.first, resent.body) == ("POST /books", b"body")
    fresh.respond(OK)
    assert [r.first for r in client.responses()] == ["200"]
    assert balancer.in_flight(BOOKS_V1) == 3, "one started/finished pair per attempt"


async def test_retry_happens_only_once():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    await warm(proxy, client)
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].reset()
    await settle()
    proxy.upstreams[1].reset()
    await settle()
    assert len(proxy.upstreams) == 2
    assert [r.first for r in client.responses()] == ["503"]


async def test_no_retry_once_the_reused_connection_sent_a_byte():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    await warm(proxy, client)
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(b"HTTP/1.1 2")
    proxy.upstreams[0].reset()
    await settle()
    assert len(proxy.upstreams) == 1
    assert [r.first for r in client.responses()] == ["503"]


@pytest.mark.parametrize("data, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: books:9080\r\nBad Header\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
    (b"GET https://books/ HTTP/1.1\r\nHost: books:9080\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: books:9080\r\nx-big: " + b"a" * downstream.MAX_HEADER_BYTES + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: books:9080\r\n" + b"x-h: 1\r\n" * downstream.MAX_HEADER_COUNT + b"\r\n", 431),
    (b"GET /" + b"a" * downstream.MAX_URL_BYTES + b" HTTP/1.1\r\nHost: books:9080\r\n\r\n", 414),
], ids=["garbage", "bad-header", "no-host", "https-absolute", "cl-then-te", "te-then-cl", "header-bytes",
        "header-count", "url"])
async def test_bad_requests_are_refused_and_closed_never_forwarded(data, status):
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    for i in range(0, len(data), 4096):
        client.send(data[i:i + 4096])
    await settle()
    (response,) = client.responses()
    assert int(response.first) == status
    assert response.header("connection") == "close"
    assert client.transport.closed
    assert proxy.upstreams == []
    assert proxy.runtime.counters.get("downstream_rq_rejected_total", code=str(status)) == 1


async def test_http10_without_host_is_accepted():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"GET http://books:9080/x HTTP/1.0\r\n\r\n")
    await settle()
    (request,) = proxy.upstreams[0].requests()
    assert request.header("host") == "books:9080"


async def test_absolute_form_uri_is_routed_by_its_authority():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"GET http://books:9080/x?y=1 HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n")
    await settle()
    (up,) = proxy.upstreams
    assert up.address == BOOKS_V1.address
    (request,) = up.requests()
    assert (request.first, request.header("host")) == ("GET /x?y=1", "books:9080")


async def test_expect_100_continue_is_answered_by_the_proxy_and_not_forwarded():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"PUT /books HTTP/1.1\r\nHost: books:9080\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert client.transport.data == b"HTTP/1.1 100 Continue\r\n\r\n"
    await settle()
    client.send(b"abc")
    (request,) = proxy.upstreams[0].requests()
    assert request.header("expect") is None and request.body == b"abc"
    proxy.upstreams[0].respond(OK)
    assert [r.first for r in client.responses()] == ["100", "200"]


async def test_hop_by_hop_headers_do_not_cross_in_either_direction():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"GET / HTTP/1.1\r\nHost: books:9080\r\nConnection: keep-alive, x-foo\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
                b"Upgrade: h2c\r\nProxy-Authorization: x\r\nProxy-Connection: keep-alive\r\nx-keep: 1\r\n\r\n")
    await settle()
    (request,) = proxy.upstreams[0].requests()
    sent = {name for name, _ in request.headers}
    assert sent.isdisjoint({"connection", "keep-alive", "te", "upgrade", "proxy-authorization", "proxy-connection"})
    assert request.header("x-keep") == "1"
    proxy.upstreams[0].respond(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nKeep-Alive: timeout=5\r\n"
                               b"Proxy-Authenticate: Basic\r\nTrailer: x\r\nx-weir-peer: leak\r\nx-app: 1\r\n\r\n")
    (response,) = client.responses()
    received = {name for name, _ in response.headers}
    assert received.isdisjoint({"keep-alive", "proxy-authenticate", "trailer", "x-weir-peer"})
    assert response.header("x-app") == "1"


async def test_client_supplied_request_id_is_kept():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"GET / HTTP/1.1\r\nHost: books:9080\r\nX-Request-Id: abc\r\n\r\n")
    await settle()
    assert proxy.upstreams[0].requests()[0].all("x-request-id") == ["abc"]


async def test_the_access_log_has_the_request_id_sent_upstream_and_the_clients_user_agent():
    proxy = Proxy(bookinfo_view())
    # A bare runtime records metrics only: this one keeps the recent lines, as a proxy with telemetry on.
    proxy.runtime.telemetry = telemetry.Telemetry("books-v1", asyncio.get_running_loop(), proxy.runtime.counters)
    client = proxy.client()
    client.send(b"GET /a HTTP/1.1\r\nHost: books:9080\r\nUser-Agent: curl/8\r\n\r\n")
    client.send(b"GET /b HTTP/1.1\r\nHost: books:9080\r\nX-Request-Id: abc\r\n\r\n")
    await settle()
    up = proxy.upstreams[0]
    up.respond(OK)
    await settle()
    up.respond(OK)
    generated = up.requests()[0].header("x-request-id")
    first, second = proxy.runtime.telemetry.recent_dicts(2)
    assert (first["path"], first["request_id"], first["user_agent"]) == ("/a", generated, "curl/8")
    assert (second["path"], second["request_id"], second["user_agent"]) == ("/b", "abc", None)


async def test_successful_request_is_recorded_with_source_labels():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.net.now += 0.02
    proxy.upstreams[0].respond(OK)
    (key,) = proxy.runtime.stats.series
    series = labels(key)
    assert series == {
        "reporter": "source", "source_workload": "gw-v1", "source_workload_namespace": "bookinfo",
        "source_app": "gw", "source_version": "v1", "destination_workload": "books-v1",
        "destination_workload_namespace": "bookinfo", "destination_app": "books", "destination_version": "v1",
        "destination_service": fqdn("books"), "destination_service_name": "books",
        "destination_service_namespace": "bookinfo", "request_protocol": "http",
        "connection_security_policy": "unknown", "source_principal": "unknown", "destination_principal": "unknown",
        "response_code": 200, "response_flags": "-",
    }
    assert proxy.runtime.stats.series[key].total_ms == pytest.approx(20.0)


@pytest.mark.parametrize("peer, source", [
    (b"bookinfo;ui-v1;ui;v1;" + fqdn("gw").encode(), ("ui-v1", "bookinfo", "ui", "v1")),
    (None, ("unknown",) * 4),
])
async def test_inbound_strips_the_peer_header_and_uses_it_for_labels(peer, source):
    proxy = Proxy(bookinfo_view(), direction=model.INBOUND)
    client = proxy.client()
    extra = b"x-weir-peer: " + peer + b"\r\n" if peer else b""
    client.send(b"GET /p HTTP/1.1\r\nHost: gw:9080\r\n" + extra + b"\r\n")
    await settle()
    (up,) = proxy.upstreams
    assert (up.address, up.port) == (LOCAL_APP.address, LOCAL_APP.port)
    (request,) = up.requests()
    assert request.header("x-weir-peer") is None
    up.respond(OK)
    series = only_series(proxy)
    assert series["reporter"] == "destination"
    assert (series["source_workload"], series["source_workload_namespace"], series["source_app"],
            series["source_version"]) == source
    assert (series["destination_workload"], series["destination_version"]) == ("gw-v1", "v1")


async def test_outbound_replaces_a_peer_header_sent_by_the_app():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"GET / HTTP/1.1\r\nHost: books:9080\r\nx-weir-peer: spoofed\r\n\r\n")
    await settle()
    assert proxy.upstreams[0].requests()[0].all("x-weir-peer") == [f"bookinfo;gw-v1;gw;v1;{fqdn('books')}"]


async def test_registry_only_refuses_hosts_outside_the_mesh():
    proxy = Proxy(bookinfo_view(policy="REGISTRY_ONLY"))
    client = proxy.client()
    client.send(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
    (response,) = client.responses()
    assert response.first == "502"
    assert only_series(proxy)["response_flags"] == "NR"
    assert proxy.upstreams == []


async def test_allow_any_passes_through_to_the_requested_host():
    proxy = Proxy(bookinfo_view(policy="ALLOW_ANY"))
    client = proxy.client()
    client.send(b"GET http://example.com:8000/x HTTP/1.1\r\nHost: example.com:8000\r\n\r\n")
    await settle()
    (up,) = proxy.upstreams
    assert (up.address, up.port) == ("example.com", 8000)
    up.respond(OK)
    assert only_series(proxy)["destination_service"] == "example.com"


async def test_a_route_to_a_passthrough_cluster_applies_its_response_header_operations():
    """A ServiceEntry with resolution NONE routes to the requested host itself; the rule's header
    operations still apply to the answer, as Envoy's route-level response headers do."""
    passthrough = model.Cluster("outbound|8000||example.com", kind=model.PASSTHROUGH, service="example.com")
    rule = model.Route("external", clusters=(model.WeightedCluster(passthrough.name),),
                       response_headers=model.HeaderOps(set=(("x-route", "1"),), remove=("server",)))
    view = bookinfo_view()
    view = dataclasses.replace(view, clusters=(*view.clusters, passthrough), route_tables=(
        *view.route_tables, model.RouteTable("8000", (model.VirtualHost("example", ("example.com",), (rule,)),))))
    proxy = Proxy(view)
    client = proxy.client()
    client.send(b"GET /x HTTP/1.1\r\nHost: example.com:8000\r\n\r\n")
    await settle()
    (up,) = proxy.upstreams
    assert (up.address, up.port) == ("example.com", 8000)
    up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nserver: app\r\n\r\nok")
    (response,) = client.responses()
    assert response.header("x-route") == "1" and response.header("server") is None


async def test_client_disconnect_mid_exchange_is_recorded_dc_and_closes_upstream():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    client.conn.connection_lost(None)
    assert proxy.upstreams[0].transport.closed
    assert only_series(proxy)["response_flags"] == "DC"
    assert client.conn not in proxy.runtime.connections


async def test_client_disconnect_while_connecting_keeps_the_new_connection_pooled():
    proxy = Proxy(bookinfo_view(lb=model.LoadBalancer("LEAST_REQUEST")))
    client = proxy.client()
    client.send(GET_BOOKS)
    client.conn.connection_lost(None)
    await settle()
    books_pool = proxy.runtime.pools.by_endpoint[(BOOKS_V1.address, BOOKS_V1.port, BOOKS)]
    assert (len(books_pool.idle), books_pool.active) == (1, 0)
    assert proxy.runtime.view.clusters[BOOKS].balancer.in_flight(BOOKS_V1) == 0


async def test_slow_client_pauses_the_upstream_reader():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    up = proxy.upstreams[0]
    client.conn.pause_writing()
    assert not up.transport.reading
    client.conn.resume_writing()
    assert up.transport.reading


async def test_interim_1xx_responses_are_dropped_and_the_final_one_forwarded():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    up = proxy.upstreams[0]
    up.respond(b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n")
    up.respond(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert [(r.first, r.body) for r in client.responses()] == [("200", b"ok")]
    assert up.protocol.is_usable()


@pytest.mark.parametrize("garbage", [b"NOT HTTP\r\n\r\n", b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok"],
                         ids=["not-http", "bare-lf"])
async def test_upstream_garbage_is_502_upe(garbage):
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(garbage)
    (response,) = client.responses()
    assert response.first == "502"
    assert only_series(proxy)["response_flags"] == "UPE"
    assert proxy.upstreams[0].transport.closed


async def test_idle_pooled_connection_past_timeout_is_not_reused():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    await warm(proxy, client)
    proxy.net.now += pool.IDLE_TIMEOUT_S
    client.send(GET_BOOKS)
    await settle()
    assert len(proxy.upstreams) == 2 and proxy.upstreams[0].transport.closed


async def test_request_body_sent_upstream_is_intact_when_parsed():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(b"POST / HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\n\r\n")
    await settle()
    for piece in (b"a" * 10, b"b" * 300, b"c"):
        client.send(b"%x\r\n%b\r\n" % (len(piece), piece))
    client.send(b"0\r\n\r\n")
    (request,) = parse_requests(proxy.upstreams[0].transport.data)
    assert request.body == b"a" * 10 + b"b" * 300 + b"c"


# -- flow control toward a client that does not read -------------------------------------------------------
async def test_a_client_not_reading_its_answers_is_not_read_from_until_it_does():
    """Otherwise its requests keep coming and their answers (local replies, later exchanges) queue in the
    proxy without bound."""
    proxy, client, up = await requested(GET_BOOKS)
    client.conn.pause_writing()
    assert not client.transport.reading and up.transport.reading is False
    up.respond(OK)
    assert not client.transport.reading  # the answer went out, the socket is still full
    client.conn.resume_writing()
    assert client.transport.reading
    client.send(GET_BOOKS)
    await settle()
    up.respond(OK)
    assert [r.first for r in client.responses()] == ["200", "200"]


async def test_an_upstream_connection_paused_for_a_slow_client_goes_back_to_the_pool_reading():
    proxy, slow, up = await requested(GET_BOOKS)
    up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
    slow.conn.pause_writing()
    assert not up.transport.reading
    up.respond(b"cd")  # the answer ends while the slow client's socket is still full
    assert up.transport.reading and up.protocol.exchange is None
    other = proxy.client(("10.0.0.50", 1234))
    other.send(GET_BOOKS)
    await settle()
    assert len(proxy.upstreams) == 1  # the pooled connection serves the next client...
    up.respond(OK)
    assert [r.first for r in other.responses()] == ["200"]  # ...and its answer is read


async def test_pipelining_past_the_queue_bound_is_answered_then_refused():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS * 300)  # one read: the parser takes all of it
    await settle()
    assert len(client.conn.queue) == downstream.MAX_QUEUED and not client.transport.reading
    for _ in range(400):
        waiting = [up for up in proxy.upstreams if up.protocol.exchange is not None and not up.transport.closed]
        if not waiting:
            break
        waiting[0].respond(OK)
        await settle()
    statuses = [r.first for r in client.responses()]
    assert statuses == ["200"] * (downstream.MAX_QUEUED + 1) + ["503"] and client.transport.closed


async def test_the_host_cache_is_bounded_in_entries_and_in_key_size(monkeypatch):
    monkeypatch.setattr(downstream, "_HOSTS", {})
    monkeypatch.setattr(downstream, "MAX_CACHED_HOSTS", 8)
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    for i in range(20):
        client.send(b"GET /books HTTP/1.1\r\nHost: h%d.example:80\r\n\r\n" % i)
        assert len(downstream._HOSTS) <= 8
    long_host = b"a" * 300 + b".example"
    client.send(b"GET /books HTTP/1.1\r\nHost: " + long_host + b"\r\n\r\n")
    assert long_host not in downstream._HOSTS
    assert b"h19.example:80" in downstream._HOSTS  # the newest are cached: the cache was cleared, not frozen


async def test_the_clients_drained_socket_does_not_override_a_full_upstream():
    proxy, client, up = await requested(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 100000\r\n\r\n" + b"b" * 1000)
    up.protocol.pause_writing()  # the upstream takes the body slowly: the client is not read
    assert not client.transport.reading
    client.conn.pause_writing()
    client.conn.resume_writing()
    assert not client.transport.reading  # still: the upstream is full
    up.protocol.resume_writing()
    assert client.transport.reading


async def test_an_upload_goes_on_while_its_early_answer_fills_the_clients_socket():
    """An upstream may answer before it has the whole body; a client that reads only once its upload is done
    must still be read, or neither side moves."""
    proxy, client, up = await requested(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 3000\r\n\r\n" + b"b" * 1000)
    up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel")
    client.conn.pause_writing()  # the answer fills the client's socket
    assert client.transport.reading and not up.transport.reading
    client.send(b"b" * 2000)  # the rest of the body is read and forwarded
    assert up.transport.data.endswith(b"b" * 2000)
    client.conn.resume_writing()
    up.respond(b"lo")
    assert [r.body for r in client.responses()] == [b"hello"]
