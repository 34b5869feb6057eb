"""calls: which headers travel, and the HTTP_PROXY path (absolute-form URI, Host of the callee)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import RawTestServer

from bookinfo import books, calls
from tests.bookinfo.helpers import client_for, make_settings


def test_propagated_headers() -> None:
    headers = {
        "End-User": "jason",
        "X-Request-Id": "1",
        "traceparent": "t",
        "tracestate": "s",
        "b3": "b",
        "X-B3-Flags": "1",
        "x-b3-parentspanid": "p",
        "authorization": "Bearer x",
        "host": "books:9080",
    }
    assert calls.propagated_headers(headers) == {
        "end-user": "jason",
        "x-request-id": "1",
        "traceparent": "t",
        "tracestate": "s",
        "b3": "b",
        "x-b3-flags": "1",
        "x-b3-parentspanid": "p",
    }


async def test_calls_go_through_http_proxy_in_absolute_form() -> None:
    seen: list[tuple[str, str | None]] = []

    async def sidecar_outbound(request: web.BaseRequest) -> web.Response:
        seen.append((request.raw_path, request.headers.get("Host")))
        return web.json_response({"ratings": {}, "version": "v2"})

    async with RawTestServer(sidecar_outbound, host="127.0.0.1") as proxy:
        proxy_url = str(proxy.make_url("")).rstrip("/")
        settings = make_settings("books", url="http://ratings:9080", proxy=proxy_url)
        async with client_for(books.create_app(settings)) as client:
            for _ in range(3):
                resp = await client.get("/books")
                assert resp.status == 200
            assert (await resp.json())["versions"]["ratings"] == "v2"
    assert seen == [("http://ratings:9080/ratings", "ratings:9080")] * 3


def test_caller_repr() -> None:
    caller = calls.Caller(
        None, calls.Callee("ratings", "http://ratings:9080", 10.0), "http://127.0.0.1:15001"
    )  # type: ignore[arg-type]
    assert repr(caller) == "Caller(ratings http://ratings:9080 timeout=10.0s proxy=http://127.0.0.1:15001)"
