"""server: the JSON access log line and the mapping of unexpected errors."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest
from aiohttp import web

from bookinfo import books, config, gw, ratings, server, ui
from tests.bookinfo.helpers import client_for, make_settings


async def test_access_log_is_one_json_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bookinfo.access")
    settings = make_settings("ratings", "v2")
    running = await server.start(ratings.create_app(settings), settings)
    try:
        port = running.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"http://127.0.0.1:{port}/ratings", headers={"x-request-id": "abc"}
            ) as resp:
                assert resp.status == 200
    finally:
        await running.stop()
    records = [r for r in caplog.records if r.name == "bookinfo.access"]
    assert len(records) == 1
    line = server.JsonFormatter("ratings", "v2").format(records[0])
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["app"] == "ratings" and entry["version"] == "v2"
    assert (entry["method"], entry["path"], entry["status"], entry["x-request-id"]) == (
        "GET",
        "/ratings",
        200,
        "abc",
    )
    assert entry["duration_ms"] >= 0


def test_formatter_renders_plain_records_as_json() -> None:
    record = logging.LogRecord("bookinfo", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    entry = json.loads(server.JsonFormatter("gw", "v1").format(record))
    assert (entry["app"], entry["level"], entry["msg"]) == ("gw", "warning", "hello world")


async def test_unexpected_error_is_a_json_500() -> None:
    app = server.base_app(config.Settings(app="ratings"))

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app.router.add_get("/broken", broken)
    async with client_for(app) as client:
        resp = await client.get("/broken")
        assert resp.status == 500
        assert await resp.json() == {"error": "internal error", "service": "ratings"}
        assert (await client.get("/nowhere")).status == 404


@pytest.mark.parametrize("factory", [ui.create_app, gw.create_app, books.create_app, ratings.create_app])
async def test_every_app_answers_healthz(factory) -> None:
    name = factory.__module__.rsplit(".", 1)[-1]
    async with client_for(factory(make_settings(name))) as client:
        resp = await client.get("/healthz")
        assert resp.status == 200
        assert await resp.text() == "ok"
