"""The gw app: the API gateway behind the ingress, `/gateway/*` (ingress -> gw -> books).

Next in the chain: `books` (through `calls.Caller`, 3 s timeout). `GET /gateway/books` answers books'
JSON with `versions.gw` added first; `GET /gateway/health` reports gw itself.
"""

from __future__ import annotations

import random
from typing import Any

from aiohttp import web

from bookinfo import calls, chaos, config, server


def add_gw_version(version: str, books: Any, service: str) -> dict[str, Any]:
    """Books' answer with `versions.gw` in front; a malformed one is a bad gateway."""
    if not isinstance(books, dict) or not isinstance(books.get("books"), list):
        raise calls.CallError(502, f"{service} answered an unexpected body", service)
    versions = books.get("versions")
    versions = versions if isinstance(versions, dict) else {}
    return {"books": books["books"], "versions": {"gw": version, **versions}}


def create_app(
    settings: config.Settings, *, rng: random.Random | None = None, sleep: chaos.Sleep | None = None
) -> web.Application:
    """`GET /gateway/books` and `GET /gateway/health`."""
    if settings.callee is None:
        raise ValueError("gw needs a callee (BOOKS_URL)")
    app = server.base_app(settings, rng=rng, sleep=sleep)
    health = {"status": "ok", "service": settings.app, "version": settings.version}

    async def gateway_books(request: web.Request) -> web.Response:
        caller = request.app[server.CALLER]
        books = await caller.get_json("/books", request.headers)
        return web.json_response(add_gw_version(settings.version, books, caller.callee.name))

    async def gateway_health(request: web.Request) -> web.Response:
        return web.json_response(health)

    app.router.add_get("/gateway/books", gateway_books)
    app.router.add_get("/gateway/health", gateway_health)
    return app
