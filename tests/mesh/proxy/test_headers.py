"""Message heads as rewritten by the proxy: hop-by-hop, request id, Istio header ops, rewrites, redirects,
consistent-hash keys. Built from real `Forwarding`/`Exchange` objects, parsed back with httptools."""

from __future__ import annotations

import random
import re
from types import SimpleNamespace

import pytest

from mesh.proxy import exchange as exchange_mod
from mesh.proxy import forwarding, headers, routing, runtime, tracing
from mesh.proxy.matching import RequestHead
from mesh.view import model
from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, GW, bookinfo_view, fqdn, parse_requests

S = model.StringMatch
OPS = model.HeaderOps


def make_exchange(path: str = "/", raw_headers: bytes = b"", method: str = "GET", host: str = "books:9080",
                  chunked: bool = False, http11: bool = True, source_ip: str = "10.0.0.7"):
    pairs = [tuple(line.split(b": ", 1)) for line in raw_headers.split(b"\r\n") if line]
    hostname, _, port = host.partition(":")
    head = RequestHead(method, path, hostname, int(port or 80), [(k.lower(), v) for k, v in pairs], "http",
                       source_ip)
    conn = SimpleNamespace(http11=http11)
    return exchange_mod.Exchange(conn, head, method, chunked, True, 0.0, host.encode())


@pytest.fixture
def rt() -> runtime.ProxyRuntime:
    proxy_runtime = runtime.ProxyRuntime(GW, random.Random(1))
    proxy_runtime.apply(bookinfo_view(), "v1")
    return proxy_runtime


def upstream(rt, exchange, route: model.Route | None = None, weighted: model.WeightedCluster | None = None,
             block: model.RouteMatch | None = None, direction: str = model.OUTBOUND):
    fwd = forwarding.Forwarding(rt, direction)
    compiled = routing.CompiledRoute(route) if route else None
    destination = None
    if compiled is not None and compiled.destinations:
        destination = compiled.destinations[0]
        if weighted is not None:
            destination = routing.CompiledDestination(route, weighted)
    target = routing.Target(rt.view.clusters[BOOKS], BOOKS_V1, compiled, destination, ())
    exchange.block = block
    (request,) = parse_requests(headers.upstream_request_head(fwd, exchange, target))
    return request


def test_request_id_is_added_only_when_absent(loop, rt):
    added = upstream(rt, make_exchange())
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        added.header("x-request-id"))
    kept = upstream(rt, make_exchange(raw_headers=b"X-Request-Id: r1"))
    assert kept.all("x-request-id") == ["r1"]


def test_request_ids_differ_and_keep_their_shape_across_the_formatted_part():
    """Ids share their formatted text for 256 counts: 600 in a row cross that boundary at least twice."""
    ids = [headers.request_id() for _ in range(600)]
    assert len(set(ids)) == 600
    shape = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert all(shape.fullmatch(request_id) for request_id in ids)
    counters = [int(request_id[-12:], 16) for request_id in ids]
    assert counters == list(range(counters[0], counters[0] + 600))  # consecutive: the last two digits and the rest agree


@pytest.mark.parametrize("name", [b"Connection", b"Keep-Alive", b"Transfer-Encoding", b"TE", b"Upgrade",
                                  b"Proxy-Authorization", b"Proxy-Connection", b"Expect", b"Trailer"])
def test_hop_by_hop_request_headers_are_stripped(loop, rt, name):
    request = upstream(rt, make_exchange(raw_headers=name + b": x\r\nx-app: 1"))
    assert request.header(name.decode().lower()) is None and request.header("x-app") == "1"


def test_chunked_request_gets_exactly_one_transfer_encoding(loop, rt):
    request = upstream(rt, make_exchange(raw_headers=b"Transfer-Encoding: gzip, chunked", chunked=True))
    assert request.all("transfer-encoding") == ["chunked"]


def test_a_gateway_appends_the_address_it_saw_to_x_forwarded_for(loop, rt):
    """Envoy at a gateway (use_remote_address): the client's address goes last, after whatever the client
    wrote, in one header line; a sidecar appends nothing (it forwards what its gateway sent)."""
    forged = make_exchange(raw_headers=b"X-Forwarded-For: 203.0.113.7")
    forged.conn.peer_ip = "198.51.100.4"
    assert upstream(rt, forged, direction=model.GATEWAY).all("x-forwarded-for") == ["203.0.113.7, 198.51.100.4"]
    two_lines = make_exchange(raw_headers=b"X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 203.0.113.7")
    two_lines.conn.peer_ip = "198.51.100.4"
    assert upstream(rt, two_lines, direction=model.GATEWAY).all("x-forwarded-for") == [
        "192.0.2.1, 203.0.113.7, 198.51.100.4"]  # one line, as Envoy writes it
    plain = make_exchange()
    plain.conn.peer_ip = "198.51.100.4"
    assert upstream(rt, plain, direction=model.GATEWAY).all("x-forwarded-for") == ["198.51.100.4"]
    rt.telemetry.tracer = tracing.Tracer(100.0)  # trace headers rewritten too: both sets of lines dropped
    traced = make_exchange(raw_headers=b"X-Forwarded-For: 203.0.113.7\r\ntraceparent: x")
    traced.conn.peer_ip = "198.51.100.4"
    request = upstream(rt, traced, direction=model.GATEWAY)
    assert request.all("x-forwarded-for") == ["203.0.113.7, 198.51.100.4"]
    assert len(request.all("traceparent")) == 1 and request.header("traceparent") != "x"
    rt.telemetry.tracer = None
    for direction in (model.OUTBOUND, model.INBOUND):
        sidecar = make_exchange(raw_headers=b"X-Forwarded-For: 203.0.113.7")
        sidecar.conn.peer_ip = "198.51.100.4"
        assert upstream(rt, sidecar, direction=direction).all("x-forwarded-for") == ["203.0.113.7"]


T = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"


@pytest.mark.parametrize(("direction", "caller", "b3"), [
    (model.OUTBOUND, f"traceparent: 00-{T}-{CALLER}-01", False),
    (model.GATEWAY, f"traceparent: 00-{T}-{CALLER}-01", False),
    (model.INBOUND, f"X-B3-TraceId: {T}\r\nX-B3-SpanId: {CALLER}\r\nX-B3-Sampled: 1", True),
    (model.OUTBOUND, f"b3: {T}-{CALLER}-1\r\ntraceparent: 00-{T}-{CALLER}-01", True),
])
def test_the_callers_trace_is_joined_as_the_head_is_copied(loop, rt, direction, caller, b3):
    rt.telemetry.tracer = tracing.Tracer(0.0)  # the caller's decision (sampled) wins over 0 %
    exchange = make_exchange(raw_headers=caller.encode())
    exchange.conn.peer_ip = "198.51.100.4"
    request = upstream(rt, exchange, direction=direction)
    trace_id, parent_id, sampled, span_id, spoke_b3 = exchange.trace
    assert (trace_id, parent_id, sampled, spoke_b3) == (T.encode(), CALLER.encode(), True, b3)
    span_id = span_id.decode()
    assert request.all("traceparent") == [f"00-{T}-{span_id}-01"]
    assert request.all("x-b3-parentspanid") == ([CALLER] if b3 else [])
    again = upstream(rt, exchange, direction=direction)  # a retry keeps its span
    assert again.all("traceparent") == [f"00-{T}-{span_id}-01"]


def test_inbound_adds_no_peer_header(loop, rt):
    assert upstream(rt, make_exchange(), direction=model.INBOUND).header("x-weir-peer") is None
    assert upstream(rt, make_exchange()).header("x-weir-peer") == f"bookinfo;gw-v1;gw;v1;{fqdn('books')}"


def test_istio_header_ops_at_route_and_destination_level(loop, rt):
    weighted = model.WeightedCluster(BOOKS, request_headers=OPS(set=(("x-dest", "d"),), add=(("x-multi", "d"),),
                                                                remove=("x-drop-dest",)))
    route = model.Route("r", clusters=(weighted,), request_headers=OPS(
        set=(("X-Set", "route"),), add=(("x-multi", "r"),), remove=("X-Drop",)))
    request = upstream(rt, make_exchange(
        raw_headers=b"x-set: client\r\nx-drop: 1\r\nx-drop-dest: 1\r\nx-multi: c\r\nx-other: o"), route)
    assert request.all("x-set") == ["route"]
    assert request.header("x-drop") is None and request.header("x-drop-dest") is None
    assert request.all("x-multi") == ["c", "r", "d"]
    assert (request.header("x-dest"), request.header("x-other")) == ("d", "o")


@pytest.mark.parametrize("match, rewrite, path, expected", [
    (S("prefix", "/api"), model.Rewrite(uri="/v2"), "/api/books?x=1", "/v2/books?x=1"),
    (S("prefix", "/prefix/"), model.Rewrite(uri="/"), "/prefix/etc", "/etc"),  # Envoy's documented example
    (S("prefix", "/API", ignore_case=True), model.Rewrite(uri="/v2"), "/api/books", "/v2/books"),
    (S("exact", "/login"), model.Rewrite(uri="/signin"), "/login?next=/", "/signin?next=/"),
    (None, model.Rewrite(uri="/v2"), "/books", "/v2books"),  # no uri match = prefix "/"
    (None, model.Rewrite(uri_regex=(r"^/books/([0-9]+)$", r"/b/\1")), "/books/12?x=1", "/b/12?x=1"),
    (None, model.Rewrite(uri_regex=("o", "0")), "/foo/bar?o=o", "/f00/bar?o=o"),
    (S("prefix", "/api"), model.Rewrite(authority="books-v2"), "/api/x", "/api/x"),
])
def test_rewrite(loop, rt, match, rewrite, path, expected):
    block = model.RouteMatch(uri=match) if match else None
    route = model.Route("r", (block,) if block else (), (model.WeightedCluster(BOOKS),), rewrite=rewrite)
    request = upstream(rt, make_exchange(path), route, block=block)
    assert request.first == f"GET {expected}"
    assert request.header("host") == (rewrite.authority or "books:9080")


@pytest.mark.parametrize("redirect, path, host, expected", [
    (model.Redirect(uri="/v1/bookRatings", authority="newratings.default.svc.cluster.local"), "/v1/getProductRatings",
     "ratings:9080", b"http://newratings.default.svc.cluster.local/v1/bookRatings"),
    # Envoy keeps the request's query (strip_query false) unless the redirect's uri has its own.
    (model.Redirect(uri="/new"), "/old?q=1", "books:9080", b"http://books:9080/new?q=1"),
    (model.Redirect(uri="/new?from=old"), "/old?q=1", "books:9080", b"http://books:9080/new?from=old"),
    (model.Redirect(uri="/new"), "/old", "books:9080", b"http://books:9080/new"),
    (model.Redirect(scheme="https"), "/old?q=1", "books:80", b"https://books/old?q=1"),
    (model.Redirect(authority="b", port=8443, scheme="https"), "/p", "books:9080", b"https://b:8443/p"),
    # derivePort: the protocol's default port is implied (none written), or the request's port is kept.
    (model.Redirect(scheme="https", derive_port=model.FROM_PROTOCOL_DEFAULT), "/p", "books:8080",
     b"https://books/p"),
    (model.Redirect(uri="/n", derive_port=model.FROM_PROTOCOL_DEFAULT), "/p?a=1", "books:9080",
     b"http://books/n?a=1"),
    (model.Redirect(authority="b", derive_port=model.FROM_REQUEST_PORT), "/p", "books:9080", b"http://b:9080/p"),
    (model.Redirect(scheme="https", derive_port=model.FROM_REQUEST_PORT), "/p", "books:8443",
     b"https://books:8443/p"),
])
def test_redirect_location(redirect, path, host, expected):
    name, _, port = host.partition(":")
    head = RequestHead("GET", path, name, int(port), [])
    assert headers.redirect_location(redirect, head) == expected


def lb(**kw) -> model.LoadBalancer:
    return model.LoadBalancer("RING_HASH", **kw)


@pytest.mark.parametrize("balancer, raw, path, key", [
    (lb(hash_header="End-User"), b"end-user: jason", "/", "jason"),
    (lb(hash_header="end-user"), b"", "/", None),
    (lb(hash_cookie="user"), b"cookie: a=1; user=bob", "/", "bob"),
    (lb(hash_cookie="user"), b"cookie: a=1", "/", None),  # no TTL: no cookie is generated
    (lb(hash_source_ip=True), b"", "/", "10.0.0.7"),
    (lb(hash_query_parameter="u"), b"", "/p?u=ann&v=1", "ann"),
    (lb(hash_query_parameter="u"), b"", "/p", None),
    (lb(), b"end-user: jason", "/", None),
])
def test_hash_key(balancer, raw, path, key):
    exchange = make_exchange(path, raw)
    assert headers.hash_key(balancer, exchange) == key
    assert exchange.extra_response_headers == b""


def test_hash_cookie_with_ttl_is_generated_and_set():
    exchange = make_exchange()
    key = headers.hash_key(lb(hash_cookie="user", hash_cookie_ttl=60.0, hash_cookie_path="/books"), exchange)
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert exchange.extra_response_headers == f"set-cookie: user={key}; Max-Age=60; Path=/books; HttpOnly\r\n".encode()
    present = make_exchange(raw_headers=b"cookie: user=" + key.encode())
    assert headers.hash_key(lb(hash_cookie="user", hash_cookie_ttl=60.0), present) == key
    assert present.extra_response_headers == b""


def test_hash_cookie_attributes_are_set_on_the_generated_cookie():
    """Istio 1.24 httpCookie.attributes → Envoy's cookie attributes: after Path, before HttpOnly; an
    attribute without a value is written as its name alone."""
    exchange = make_exchange("/")
    balancer = lb(hash_cookie="user", hash_cookie_ttl=60.0, hash_cookie_path="/",
                  hash_cookie_attributes=(("SameSite", "Strict"), ("Secure", "")))
    key = headers.hash_key(balancer, exchange)
    assert exchange.extra_response_headers == (
        f"set-cookie: user={key}; Max-Age=60; Path=/; SameSite=Strict; Secure; HttpOnly\r\n".encode())


def test_hash_cookie_with_zero_ttl_is_a_session_cookie():
    exchange = make_exchange()
    key = headers.hash_key(lb(hash_cookie="user", hash_cookie_ttl=0.0), exchange)
    assert exchange.extra_response_headers == f"set-cookie: user={key}; HttpOnly\r\n".encode()
