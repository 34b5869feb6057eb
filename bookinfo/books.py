"""The books app: the catalogue, each book joined with its rating from one `GET /ratings` call.

Next in the chain: `ratings` (through `calls.Caller`, 10 s timeout). v2 adds a `description` to each
book; v1 has no such key. `versions` reports which books and ratings versions served the answer.
"""

from __future__ import annotations

import random
from typing import Any

from aiohttp import web

from bookinfo import calls, chaos, config, server

CATALOGUE: tuple[dict[str, Any], ...] = (
    {
        "id": 1,
        "title": "The Comedy of Errors",
        "author": "William Shakespeare",
        "description": "Two sets of identical twins, separated at birth, collide in one day of mistaken identity.",
    },
    {
        "id": 2,
        "title": "Designing Data-Intensive Applications",
        "author": "Martin Kleppmann",
        "description": "The ideas behind reliable, scalable and maintainable data systems.",
    },
    {
        "id": 3,
        "title": "The Pragmatic Programmer",
        "author": "David Thomas and Andrew Hunt",
        "description": "Practical advice on the craft of writing software, from tracer bullets to DRY.",
    },
    {
        "id": 4,
        "title": "Site Reliability Engineering",
        "author": "Betsy Beyer, Chris Jones, Jennifer Petoff, Niall Murphy",
        "description": "How Google runs production systems: error budgets, toil and blameless postmortems.",
    },
    {
        "id": 5,
        "title": "Structure and Interpretation of Computer Programs",
        "author": "Harold Abelson and Gerald Jay Sussman",
        "description": "Programs as a way of thinking, taught through Scheme and metalinguistic abstraction.",
    },
)


def join_books(version: str, ratings: Any, service: str) -> dict[str, Any]:
    """The `/books` answer from a `/ratings` answer; a malformed one is a bad gateway."""
    if not isinstance(ratings, dict) or not isinstance(ratings.get("ratings"), dict):
        raise calls.CallError(502, f"{service} answered an unexpected body", service)
    by_id = ratings["ratings"]
    books = []
    for entry in CATALOGUE:
        book = {"id": entry["id"], "title": entry["title"], "author": entry["author"]}
        if version == "v2":
            book["description"] = entry["description"]
        book["rating"] = by_id.get(str(entry["id"]))
        books.append(book)
    return {"books": books, "versions": {"books": version, "ratings": ratings.get("version")}}


def create_app(
    settings: config.Settings, *, rng: random.Random | None = None, sleep: chaos.Sleep | None = None
) -> web.Application:
    """`GET /books`: calls ratings once and answers the joined catalogue."""
    if settings.callee is None:
        raise ValueError("books needs a callee (RATINGS_URL)")
    app = server.base_app(settings, rng=rng, sleep=sleep)

    async def list_books(request: web.Request) -> web.Response:
        caller = request.app[server.CALLER]
        ratings = await caller.get_json("/ratings", request.headers)
        return web.json_response(join_books(settings.version, ratings, caller.callee.name))

    app.router.add_get("/books", list_books)
    return app
