"""gw: the whole chain gw -> books -> ratings as real apps, and gw's own error passing."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import unused_port

from bookinfo import books, gw, ratings
from tests.bookinfo.helpers import Recorder, client_for, fake_app, make_settings, serve


@pytest.mark.parametrize(("books_version", "ratings_version"), [("v1", "v1"), ("v2", "v1"), ("v1", "v2")])
async def test_gateway_books_exact_shape(books_version: str, ratings_version: str) -> None:
    async with serve(ratings.create_app(make_settings("ratings", ratings_version))) as ratings_url:
        async with serve(
            books.create_app(make_settings("books", books_version, url=ratings_url))
        ) as books_url:
            async with client_for(gw.create_app(make_settings("gw", url=books_url))) as client:
                resp = await client.get("/gateway/books", headers={"x-request-id": "r-42"})
                assert resp.status == 200
                body = await resp.json()
    assert list(body) == ["books", "versions"]
    assert body["versions"] == {"gw": "v1", "books": books_version, "ratings": ratings_version}
    assert list(body["versions"]) == ["gw", "books", "ratings"]
    keys = {"id", "title", "author", "rating"} | ({"description"} if books_version == "v2" else set())
    assert all(set(book) == keys for book in body["books"])


async def test_health() -> None:
    async with client_for(gw.create_app(make_settings("gw"))) as client:
        resp = await client.get("/gateway/health")
        assert await resp.json() == {"status": "ok", "service": "gw", "version": "v1"}
        assert (await client.get("/healthz")).status == 200


async def test_books_5xx_passed_on_with_chain_in_message() -> None:
    failing = Recorder({"error": "ratings answered 500: chaos", "service": "ratings"}, status=500)
    async with serve(fake_app({"/books": failing})) as url:
        async with client_for(gw.create_app(make_settings("gw", url=url))) as client:
            resp = await client.get("/gateway/books", headers={"end-user": "jason"})
            assert resp.status == 500
            assert await resp.json() == {
                "error": "books answered 500: ratings answered 500: chaos",
                "service": "books",
            }
    assert failing.requests[0].headers["end-user"] == "jason"


async def test_books_unreachable_is_502() -> None:
    settings = make_settings("gw", url=f"http://127.0.0.1:{unused_port()}")
    async with client_for(gw.create_app(settings)) as client:
        resp = await client.get("/gateway/books")
        assert resp.status == 502
        assert (await resp.json())["service"] == "books"
