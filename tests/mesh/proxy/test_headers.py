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
from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, GW, bookinfo_view, fqdn, parse_requests, parse_responses

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


def test_request_ids_differ():
    assert len({headers.request_id() for _ in range(100)}) == 100


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
    assert (trace_id, parent_id, sampled, spoke_b3) == (T, CALLER, True, b3)
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


def response(exchange, status: int = 200, raw: list[tuple[bytes, bytes]] | None = None) -> bytes:
    head = b"HTTP/1.1 %d Upstream" % status + b"".join(b"\r\n" + n + b": " + v for n, v in raw or [])
    return headers.downstream_response_head(exchange, status, head)


def test_response_hop_by_hop_and_peer_headers_are_stripped_and_length_kept():
    exchange = make_exchange()
    head = response(exchange, 200, [(b"connection", b"keep-alive"), (b"keep-alive", b"timeout=5"),
                                    (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2"),
                                    (b"proxy-authenticate", b"x"), (b"x-weir-peer", b"p"),
                                    (b"content-length", b"2"), (b"x-app", b"1")])
    assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-app: 1\r\n\r\n"
    assert not exchange.chunked_response


def test_response_without_length_is_chunked_for_http11_and_closed_for_http10():
    chunked = make_exchange()
    assert response(chunked).endswith(b"transfer-encoding: chunked\r\n\r\n") and chunked.chunked_response
    old = make_exchange(http11=False)
    assert response(old).endswith(b"connection: close\r\n\r\n") and not old.keep_alive


@pytest.mark.parametrize("status, method", [(204, "GET"), (304, "GET"), (200, "HEAD")])
def test_bodyless_responses_are_not_chunked(status, method):
    exchange = make_exchange(method=method)
    assert b"transfer-encoding" not in response(exchange, status)
    assert exchange.keep_alive


def test_response_header_ops_at_route_and_destination_level():
    exchange = make_exchange()
    exchange.response_ops = headers.header_plan(OPS(set=(("x-set", "route"),), remove=("x-secret",)),
                                                OPS(add=(("x-added", "dest"),)))
    head = response(exchange, 200, [(b"x-set", b"app"), (b"x-secret", b"s"), (b"x-added", b"app"),
                                    (b"content-length", b"0")])
    (parsed,) = parse_responses(head)
    assert parsed.all("x-set") == ["route"]
    assert parsed.header("x-secret") is None
    assert parsed.all("x-added") == ["app", "dest"]


def test_set_cookie_from_hash_key_is_appended_to_the_response():
    exchange = make_exchange()
    exchange.extra_response_headers = b"set-cookie: user=1\r\n"
    assert b"set-cookie: user=1\r\n" in response(exchange, 200, [(b"content-length", b"0")])


def test_raw_response_head_fast_path_matches_names_exactly_and_in_any_case():
    exchange = make_exchange()
    raw = (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKEEP-ALIVE : timeout=5\r\nTe: trailers\r\n"
           b"Connection-Id: 7\r\nTE-Extra: 1\r\nUpgrade-Insecure-Requests: 1\r\nX-Weir-Peer: spoof\r\n"
           b"Content-Length: 2")
    (parsed,) = parse_responses(headers.downstream_response_head(exchange, 200, raw) + b"ok")
    names = [name.lower() for name, _ in parsed.headers]
    assert names == ["connection-id", "te-extra", "upgrade-insecure-requests", "content-length"]
    assert parsed.body == b"ok" and not exchange.chunked_response


@pytest.mark.parametrize(("raw", "framed"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3", True),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked", True),
    (b"HTTP/1.1 200 OK\r\nX-Content-Length: 3", False),
    (b"HTTP/1.1 200 OK", False),
])
def test_has_framing(raw, framed):
    assert (headers.FRAMING_LINE.search(raw) is not None) is framed
    assert headers.scan_response_head(raw)[2] is framed and headers.frames_body(raw) is framed
    padded = raw + b"\r\nx-pad: " + b"p" * headers.MAX_SCANNED_HEAD_BYTES  # past the memo: searched
    assert headers.frames_body(padded) is framed and padded not in headers._scanned


def fresh_scan(raw: bytes) -> tuple[bytes, bool, bool]:
    """What scan_response_head must answer, computed without its memo."""
    first = raw.find(b"\r\n")
    rest = headers._HOP_LINE.sub(b"", raw[first:]) if first >= 0 else b""
    return rest, headers._LENGTH.search(rest) is not None, headers.FRAMING_LINE.search(raw) is not None


HEAD_LINES = [b"Content-Length: 3", b"content-length:3", b"Transfer-Encoding: chunked", b"Connection: keep-alive",
              b"CONNECTION : close", b"Keep-Alive: timeout=5", b"Server: nginx", b"X-Content-Length: 9",
              b"Upgrade: h2c", b"ETag: \"a\"", b"Date: Thu, 26 Nov 2026 18:00:00 GMT", b"TE: trailers"]


def test_a_scanned_head_is_remembered_and_every_head_gets_its_own_answer(monkeypatch):
    monkeypatch.setattr(headers, "_scanned", {})
    rng = random.Random(4)
    heads = [b"\r\n".join([b"HTTP/1.1 200 OK", *rng.sample(HEAD_LINES, rng.randint(0, 5))]) for _ in range(300)]
    heads += [head.swapcase() for head in heads[:50]]  # same names, other case: equal answers, other keys
    for _ in range(2):  # the second round answers from the memo
        assert [headers.scan_response_head(head) for head in heads] == [fresh_scan(head) for head in heads]
    remembered = headers._scanned[heads[0]]
    assert headers.scan_response_head(heads[0]) is remembered


def test_the_memo_is_bounded_in_heads_and_in_head_size(monkeypatch):
    monkeypatch.setattr(headers, "_scanned", {})
    monkeypatch.setattr(headers, "MAX_SCANNED_HEADS", 8)
    for i in range(50):
        headers.scan_response_head(b"HTTP/1.1 200 OK\r\nx-n: %d\r\nConnection: close" % i)
        assert len(headers._scanned) <= 8
    big = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * headers.MAX_SCANNED_HEAD_BYTES
    assert headers.scan_response_head(big) == fresh_scan(big) and big not in headers._scanned
