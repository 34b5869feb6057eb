"""books: the join with ratings, v1/v2 differences, header propagation and error passing."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port

from bookinfo import books, calls, ratings
from tests.bookinfo.helpers import Recorder, client_for, fake_app, make_settings, serve

RATINGS_V1 = {"ratings": {"1": {"stars": 4, "presentation": ":-)"}}, "version": "v1"}


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_books_joins_real_ratings(version: str) -> None:
    async with serve(ratings.create_app(make_settings("ratings", "v2"))) as ratings_url:
        app = books.create_app(make_settings("books", version, url=ratings_url))
        async with client_for(app) as client:
            resp = await client.get("/books")
            assert resp.status == 200
            body = await resp.json()
    assert body["versions"] == {"books": version, "ratings": "v2"}
    assert len(body["books"]) == len(books.CATALOGUE) >= 3
    first = body["books"][0]
    assert first["id"] == 1 and first["title"] and first["author"]
    assert first["rating"] == {"stars": 4, "presentation": "¯\\_(ツ)_/¯"}
    has_description = {"description" in book for book in body["books"]}
    assert has_description == {version == "v2"}


async def test_books_calls_ratings_once_and_propagates_headers() -> None:
    recorder = Recorder(RATINGS_V1)
    inbound = {
        "end-user": "jason",
        "x-request-id": "req-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "weir=1",
        "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        "X-B3-TraceId": "80f198ee56343ba864fe8b2a57d3eff7",
        "x-b3-spanid": "e457b5a2e4d86bd1",
        "x-b3-sampled": "1",
        "cookie": "secret=1",
        "x-other": "nope",
    }
    async with serve(fake_app({"/ratings": recorder})) as url:
        async with client_for(books.create_app(make_settings("books", url=url))) as client:
            resp = await client.get("/books", headers=inbound)
            assert resp.status == 200
            body = await resp.json()
    assert len(recorder.requests) == 1
    sent = recorder.requests[0].headers
    for name, value in inbound.items():
        if name in ("cookie", "x-other"):
            assert name not in sent
        else:
            assert sent[name] == value
    assert body["books"][1]["rating"] is None  # ratings did not rate book 2


async def _hang(request: web.Request) -> web.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_connect_failure_is_502() -> None:
    settings = make_settings("books", url=f"http://127.0.0.1:{unused_port()}")
    async with client_for(books.create_app(settings)) as client:
        resp = await client.get("/books")
        assert resp.status == 502
        body = await resp.json()
    assert body["service"] == "ratings"
    assert "cannot reach ratings" in body["error"]


async def test_timeout_is_504() -> None:
    async with serve(fake_app({"/ratings": _hang})) as url:
        async with client_for(books.create_app(make_settings("books", url=url, timeout=0.05))) as client:
            resp = await client.get("/books")
            assert resp.status == 504
            assert await resp.json() == {"error": "ratings did not answer within 0.05s", "service": "ratings"}


@pytest.mark.parametrize(
    ("callee_status", "callee_body", "expected"),
    [
        (503, {"error": "no healthy upstream"}, 503),
        (500, "plain text failure", 500),
        (404, {"error": "not found"}, 502),
        (200, ["not", "an", "object"], 502),
    ],
)
async def test_callee_failure_is_passed_on(callee_status: int, callee_body: object, expected: int) -> None:
    async with serve(fake_app({"/ratings": Recorder(callee_body, callee_status)})) as url:
        async with client_for(books.create_app(make_settings("books", url=url))) as client:
            resp = await client.get("/books")
            assert resp.status == expected
            body = await resp.json()
    assert set(body) == {"error", "service"}
    assert body["service"] == "ratings"
    if callee_status != 200:
        assert body["error"].startswith(f"ratings answered {callee_status}")


async def test_non_json_success_is_502() -> None:
    async def text(request: web.Request) -> web.Response:
        return web.Response(text="<html>")

    async with serve(fake_app({"/ratings": text})) as url:
        async with client_for(books.create_app(make_settings("books", url=url))) as client:
            resp = await client.get("/books")
            assert resp.status == 502
            assert (await resp.json())["service"] == "ratings"


async def test_oversized_body_is_502(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calls, "MAX_BODY_BYTES", 64)
    async with serve(fake_app({"/ratings": Recorder({"ratings": {}, "padding": "x" * 200})})) as url:
        async with client_for(books.create_app(make_settings("books", url=url))) as client:
            resp = await client.get("/books")
            assert resp.status == 502
            assert (await resp.json())["error"].startswith("ratings sent a bad body")
