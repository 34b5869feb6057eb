"""ui: the page renders books, ratings and versions, escapes what it shows, and reports failures."""

from __future__ import annotations

from aiohttp.test_utils import unused_port

from bookinfo import ui
from tests.bookinfo.helpers import Recorder, client_for, fake_app, make_settings, serve

GATEWAY_ANSWER = {
    "books": [
        {
            "id": 1,
            "title": "The Comedy of Errors",
            "author": "William Shakespeare",
            "description": "Twins <and> twins",
            "rating": {"stars": 4, "presentation": "¯\\_(ツ)_/¯"},
        },
        {"id": 2, "title": "Unrated", "author": "Nobody", "rating": None},
    ],
    "versions": {"gw": "v1", "books": "v2", "ratings": "v2"},
}


async def test_page_shows_books_ratings_and_versions() -> None:
    recorder = Recorder(GATEWAY_ANSWER)
    async with serve(fake_app({"/gateway/books": recorder})) as url:
        async with client_for(ui.create_app(make_settings("ui", url=url))) as client:
            resp = await client.get("/", headers={"x-request-id": "ui-1", "end-user": "jason"})
            assert resp.status == 200
            assert resp.content_type == "text/html"
            page = await resp.text()
    assert "The Comedy of Errors" in page and "William Shakespeare" in page
    assert "Twins &lt;and&gt; twins" in page
    assert "★★★★☆" in page and "¯\\_(ツ)_/¯" in page
    assert "no rating" in page
    for part in ("gw <b>v1</b>", "books <b>v2</b>", "ratings <b>v2</b>"):
        assert part in page
    assert "page by ui v1" in page
    assert "http://" not in page and "https://" not in page  # no external assets
    assert recorder.requests[0].headers["x-request-id"] == "ui-1"
    assert recorder.requests[0].path == "/gateway/books"


async def test_page_shows_gw_failure_and_status() -> None:
    failing = Recorder({"error": "books did not answer within 3s", "service": "books"}, status=504)
    async with serve(fake_app({"/gateway/books": failing})) as url:
        async with client_for(ui.create_app(make_settings("ui", url=url))) as client:
            resp = await client.get("/")
            assert resp.status == 504
            page = await resp.text()
    assert "<b>504</b> from <b>gw</b>" in page
    assert "gw answered 504: books did not answer within 3s" in page


async def test_page_when_gw_is_down() -> None:
    settings = make_settings("ui", url=f"http://127.0.0.1:{unused_port()}")
    async with client_for(ui.create_app(settings)) as client:
        resp = await client.get("/")
        assert resp.status == 502
        assert "cannot reach gw" in await resp.text()
