"""CORS (Istio corsPolicy) through the real protocol objects: preflights answered, answers to allowed
origins marked, everything else untouched; Envoy's CORS filter is the reference."""

from __future__ import annotations

import pytest

from mesh.proxy import cors
from mesh.view import model
from tests.mesh.proxy.fakes import settle
from tests.mesh.proxy.test_resilience import flags, proxy_for

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


async def exchange(policy: model.Cors, data: bytes, upstream_answer: bytes | None = UPSTREAM_OK, **route):
    proxy = proxy_for(cors=policy, **route)
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
