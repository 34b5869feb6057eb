"""Doubles for the bookinfo tests: settings, apps served on loopback, fake callees that record calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bookinfo import calls, config

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_settings(
    app: str,
    version: str = "v1",
    *,
    url: str = "http://unused",
    timeout: float = 5.0,
    proxy: str | None = None,
) -> config.Settings:
    """Settings for `app`, calling `url` (its table callee name) with `timeout`."""
    entry = config.CALL_TABLE.get(app)
    callee = calls.Callee(entry[0], url, timeout) if entry else None
    return config.Settings(app=app, version=version, host="127.0.0.1", port=0, proxy=proxy, callee=callee)


@asynccontextmanager
async def client_for(app: web.Application) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on loopback and yield its base URL."""
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/")


def fake_app(routes: dict[str, Handler]) -> web.Application:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, _as_coroutine(handler))
    return app


def _as_coroutine(handler: Handler) -> Handler:
    """aiohttp wants coroutine functions, not callable objects."""

    async def call(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    return call


class Recorder:
    """A fake callee that records each request's headers and answers a fixed reply."""

    def __init__(self, body: object, status: int = 200) -> None:
        self.body = body
        self.status = status
        self.requests: list[web.Request] = []

    async def __call__(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        return web.json_response(self.body, status=self.status)
