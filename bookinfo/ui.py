"""The ui app: one HTML page listing the books, their ratings and which version served each part.

Next in the chain: `gw` (through `calls.Caller`, `GET /gateway/books`, 5 s timeout). On a failed call the
page shows the error, the failing service and the status, and answers with that status.
"""

from __future__ import annotations

import html
import importlib.resources
import random
from string import Template
from typing import Any

from aiohttp import web

from bookinfo import calls, chaos, config, server

VERSION_ORDER = ("gw", "books", "ratings")


def load_template() -> Template:
    text = importlib.resources.files("bookinfo").joinpath("templates/index.html").read_text("utf-8")
    return Template(text)


def render_books(answer: Any) -> str:
    """The versions strip and the books table for a `/gateway/books` answer."""
    versions = answer.get("versions") or {}
    badges = "".join(
        f'<span class="badge">{html.escape(name)} <b>{html.escape(str(versions.get(name, "?")))}</b></span>'
        for name in VERSION_ORDER
    )
    rows = "".join(_book_row(book) for book in answer.get("books") or [])
    return (
        f'<div class="versions">{badges}</div>\n'
        "<table>\n<thead><tr><th>#</th><th>Book</th><th>Author</th><th>Rating</th></tr></thead>\n"
        f"<tbody>\n{rows}</tbody>\n</table>"
    )


def _book_row(book: dict[str, Any]) -> str:
    esc = html.escape
    description = book.get("description")
    desc = f'<div class="desc">{esc(description)}</div>' if description else ""
    rating = book.get("rating") or {}
    stars = rating.get("stars")
    if isinstance(stars, int):
        shown = f'<span class="stars">{"★" * stars}{"☆" * max(0, 5 - stars)}</span> {esc(str(rating.get("presentation", "")))}'
    else:
        shown = "no rating"
    return (
        f"<tr><td>{esc(str(book.get('id', '')))}</td><td><b>{esc(str(book.get('title', '')))}</b>{desc}</td>"
        f"<td>{esc(str(book.get('author', '')))}</td><td>{shown}</td></tr>\n"
    )


def render_error(error: calls.CallError) -> str:
    return (
        f'<div class="error"><b>{error.status}</b> from <b>{html.escape(error.service)}</b>: '
        f"{html.escape(error.message)}</div>"
    )


def create_app(
    settings: config.Settings, *, rng: random.Random | None = None, sleep: chaos.Sleep | None = None
) -> web.Application:
    """`GET /`: the page, fetched server-side through gw."""
    if settings.callee is None:
        raise ValueError("ui needs a callee (GW_URL)")
    app = server.base_app(settings, rng=rng, sleep=sleep)
    template = load_template()

    async def index(request: web.Request) -> web.Response:
        caller = request.app[server.CALLER]
        status = 200
        try:
            answer = await caller.get_json("/gateway/books", request.headers)
            if not isinstance(answer, dict):
                raise calls.CallError(
                    502, f"{caller.callee.name} answered an unexpected body", caller.callee.name
                )
            content = render_books(answer)
        except calls.CallError as exc:
            status, content = exc.status, render_error(exc)
        page = template.substitute(content=content, ui_version=html.escape(settings.version))
        return web.Response(text=page, status=status, content_type="text/html")

    app.router.add_get("/", index)
    return app
