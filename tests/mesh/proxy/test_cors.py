"""CORS (Istio corsPolicy) through the real protocol objects: preflights answered, answers to allowed
origins marked, everything else untouched; Envoy's CORS filter is the reference."""

from __future__ import annotations

import dataclasses

import pytest

from mesh.proxy import cors
from mesh.view import model
from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, BOOKS_V2, Proxy, bookinfo_view, settle
from tests.mesh.proxy.test_resilience import flags, proxy_for, route

FOO = "http://foo.example"
# Istio's own test data (tests/testdata/config/rule-default-route-cors-policy.yaml), as the control plane
# compiles it.
ISTIO_TESTDATA = model.Cors(origins=(model.StringMatch("exact", FOO),), allow_methods="POST,GET,OPTIONS",
                            allow_headers="content-type", expose_headers="x-custom-header", max_age="300",
                            credentials=True)
UPSTREAM_OK = (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\naccess-control-allow-origin: *\r\n"
               b"access-control-expose-headers: x-upstream\r\nx-app: books\r\n\r\nok")


def request(method: str = "GET", origin: str | None = FOO, *extra: str) -> bytes:
    lines = [f"{method} /books HTTP/1.1", "Host: books:9080"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def preflight(origin: str = FOO, *extra: str) -> bytes:
    return request("OPTIONS", origin, "Access-Control-Request-Method: POST", *extra)


async def exchange(policy: model.Cors, data: bytes, upstream_answer: bytes | None = UPSTREAM_OK, **route_kw):
    proxy = proxy_for(cors=policy, **route_kw)
    client = proxy.client()
    client.send(data)
    await settle()
    if upstream_answer is not None and proxy.upstreams:
        proxy.upstreams[0].respond(upstream_answer)
    (response,) = client.responses()
    return proxy, response


async def test_a_preflight_from_an_allowed_origin_is_answered_here_with_the_policy():
    proxy, response = await exchange(ISTIO_TESTDATA, preflight())
    assert proxy.upstreams == []  # never forwarded
    assert response.first == "200" and response.body == b""
    assert response.header("content-length") == "0" and response.header("content-type") is None  # as Envoy
    assert {name: response.header(name) for name in (
        "access-control-allow-origin", "access-control-allow-credentials", "access-control-allow-methods",
        "access-control-allow-headers", "access-control-max-age", "access-control-expose-headers")} == {
        "access-control-allow-origin": FOO, "access-control-allow-credentials": "true",
        "access-control-allow-methods": "POST,GET,OPTIONS", "access-control-allow-headers": "content-type",
        "access-control-max-age": "300", "access-control-expose-headers": None}
    assert flags(proxy) == [(200, "-")]


async def test_an_answer_to_an_allowed_origin_carries_cors_headers_in_place_of_the_upstreams():
    proxy, response = await exchange(ISTIO_TESTDATA, request())
    (forwarded,) = proxy.upstreams[0].requests()
    assert forwarded.header("origin") == FOO  # the request itself goes on unchanged
    assert response.first == "200" and response.body == b"ok" and response.header("x-app") == "books"
    assert response.all("access-control-allow-origin") == [FOO]
    assert response.all("access-control-allow-credentials") == ["true"]
    assert response.all("access-control-expose-headers") == ["x-custom-header"]
    assert response.header("access-control-max-age") is None  # preflight only


@pytest.mark.parametrize("origin", ["http://evil.example", "", None])
async def test_other_origins_and_requests_without_one_are_left_alone(origin):
    proxy, response = await exchange(ISTIO_TESTDATA, request(origin=origin))
    assert response.all("access-control-allow-origin") == ["*"]  # the upstream's own, untouched
    assert response.all("access-control-expose-headers") == ["x-upstream"]
    assert response.header("access-control-allow-credentials") is None


async def test_a_preflight_from_another_origin_is_forwarded_by_default():
    proxy, response = await exchange(ISTIO_TESTDATA, preflight("http://evil.example"))
    (forwarded,) = proxy.upstreams[0].requests()
    assert forwarded.first == "OPTIONS /books" and response.all("access-control-allow-origin") == ["*"]


async def test_unmatched_preflights_ignore_answers_here_without_allowing_the_origin():
    policy = model.Cors(origins=ISTIO_TESTDATA.origins, allow_methods="GET", credentials=True,
                        forward_unmatched=False)
    proxy, response = await exchange(policy, preflight("http://evil.example"))
    assert proxy.upstreams == [] and response.first == "200"
    assert response.header("access-control-allow-origin") is None
    assert response.header("access-control-allow-methods") == "GET"  # Envoy sends the rest as configured
    assert response.header("access-control-allow-credentials") == "true"


@pytest.mark.parametrize(("match", "allowed"), [
    (model.StringMatch("exact", "*"), True),  # `*` allows every origin
    (model.StringMatch("prefix", "https://"), False),
    (model.StringMatch("prefix", "http://"), True),
    (model.StringMatch("regex", r"http://[a-z]+\.example"), True),
    (model.StringMatch("regex", r"foo"), False),  # a full match, as Envoy's safe_regex
])
async def test_origin_matches(match, allowed):
    _, response = await exchange(model.Cors(origins=(match,)), request())
    assert response.all("access-control-allow-origin") == ([FOO] if allowed else ["*"])


async def test_a_wildcard_echoes_what_the_preflight_asks_for():
    policy = model.Cors(origins=(model.StringMatch("exact", "*"),), allow_methods="*", allow_headers="*")
    _, response = await exchange(policy, preflight(FOO, "Access-Control-Request-Headers: x-a, x-b"))
    assert response.header("access-control-allow-methods") == "POST"
    assert response.header("access-control-allow-headers") == "x-a, x-b"
    assert response.header("access-control-allow-credentials") is None  # not set: not sent


async def test_a_plain_options_request_is_not_a_preflight():
    proxy, response = await exchange(ISTIO_TESTDATA, request("OPTIONS"))
    assert len(proxy.upstreams) == 1 and response.all("access-control-allow-origin") == [FOO]


async def test_a_fault_abort_is_marked_and_a_preflight_is_answered_before_any_fault():
    abort = model.Fault(abort_status=503, abort_percent=100)
    proxy, response = await exchange(ISTIO_TESTDATA, request(), fault=abort)
    assert (response.first, response.header("access-control-allow-origin")) == ("503", FOO)
    assert flags(proxy) == [(503, "FI")]
    proxy, response = await exchange(ISTIO_TESTDATA, preflight(), fault=abort)
    assert response.first == "200" and flags(proxy) == [(200, "-")]


async def test_cors_replaces_the_routes_own_header_operations_for_its_names():
    ops = model.HeaderOps(set=(("access-control-allow-origin", "https://route.example"), ("x-route", "1")))
    _, response = await exchange(ISTIO_TESTDATA, request(), response_headers=ops)
    assert response.all("access-control-allow-origin") == [FOO] and response.header("x-route") == "1"


def test_compiled_policy_allows_by_any_match():
    policy = cors.CompiledCors(model.Cors(origins=(model.StringMatch("exact", "https://a"),
                                                   model.StringMatch("prefix", "https://b."))))
    assert [policy.allows(o) for o in ("https://a", "https://b.x", "https://c", "*")] == [True, True, False, False]
    assert not cors.CompiledCors(model.Cors()).allows(FOO)  # no origins: none allowed


async def test_with_no_healthy_endpoint_a_preflight_is_still_answered_and_the_503_allows_the_origin():
    proxy, response = await exchange(ISTIO_TESTDATA, preflight(), books=())
    assert response.first == "200" and response.header("access-control-allow-origin") == FOO
    proxy, response = await exchange(ISTIO_TESTDATA, request(), books=())
    assert (response.first, response.header("access-control-allow-origin")) == ("503", FOO)
    assert flags(proxy) == [(503, "UH")]


async def test_an_overflow_503_allows_the_origin():
    pool = model.ConnectionPool(max_connections=1, max_pending_requests=0)
    view = bookinfo_view(books_route=route(cors=ISTIO_TESTDATA))
    view = dataclasses.replace(view, clusters=tuple(
        dataclasses.replace(c, pool=pool) if c.name == BOOKS else c for c in view.clusters))
    proxy = Proxy(view)
    first, second = proxy.client(), proxy.client()
    first.send(request())
    await settle()
    second.send(request())
    await settle()
    (response,) = second.responses()
    assert (response.first, response.header("access-control-allow-origin")) == ("503", FOO)
    assert response.header("x-envoy-overloaded") == "true"


async def test_preflights_take_no_turn_of_the_balancer_and_no_hash_cookie():
    balanced = model.LoadBalancer("ROUND_ROBIN")
    proxy = Proxy(bookinfo_view(books=(BOOKS_V1, BOOKS_V2), books_route=route(cors=ISTIO_TESTDATA), lb=balanced))
    hosts = []
    for _ in range(4):
        client = proxy.client()
        client.send(preflight())
        client.send(request())
        await settle()
        upstream = next(u for u in proxy.upstreams if u.requests() and u.transport.data)
        hosts.append(upstream.address)
        upstream.respond(UPSTREAM_OK)
        upstream.transport.clear()
    assert sorted(hosts) == sorted([BOOKS_V1.address, BOOKS_V2.address] * 2)  # the GETs alternate
    cookie = model.LoadBalancer("RING_HASH", hash_cookie="affinity", hash_cookie_ttl=60.0)
    proxy = Proxy(bookinfo_view(books_route=route(cors=ISTIO_TESTDATA), lb=cookie))
    client = proxy.client()
    client.send(preflight())
    await settle()
    (response,) = client.responses()
    assert response.first == "200" and response.header("set-cookie") is None


async def test_pipelined_requests_each_get_their_own_verdict():
    proxy = proxy_for(cors=ISTIO_TESTDATA)
    client = proxy.client()
    client.send(request() + request(origin=None))
    for _ in range(2):
        await settle()
        proxy.upstreams[-1].respond(UPSTREAM_OK)
    allowed, plain = client.responses()
    assert allowed.all("access-control-allow-origin") == [FOO]
    assert plain.all("access-control-allow-origin") == ["*"]  # the upstream's, nothing of ours


async def test_a_head_answer_allows_the_origin():
    proxy = proxy_for(cors=ISTIO_TESTDATA)
    client = proxy.client()
    client.send(request("HEAD"))
    await settle()
    proxy.upstreams[-1].respond(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    head = client.transport.data.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200") and b"\r\naccess-control-allow-origin: http://foo.example" in head
