"""The ratings app: star ratings per book id, the end of the call chain (books -> ratings).

v1 presents each rating as `:-)`, v2 as `¯\\_(ツ)_/¯`; the stars are the same, so a reader can see which
version answered but nothing else changes.
"""

from __future__ import annotations

import random

from aiohttp import web

from bookinfo import chaos, config, server

STARS: dict[int, int] = {1: 4, 2: 5, 3: 4, 4: 5, 5: 3}
PRESENTATION = {"v1": ":-)", "v2": "¯\\_(ツ)_/¯"}


def ratings_body(version: str) -> dict[str, object]:
    presentation = PRESENTATION[version]
    return {
        "ratings": {
            str(book_id): {"stars": stars, "presentation": presentation} for book_id, stars in STARS.items()
        },
        "version": version,
    }


def create_app(
    settings: config.Settings, *, rng: random.Random | None = None, sleep: chaos.Sleep | None = None
) -> web.Application:
    """`GET /ratings` (all) and `GET /ratings/{id}` (one, 404 when unknown)."""
    app = server.base_app(settings, rng=rng, sleep=sleep)
    version = settings.version
    everything = ratings_body(version)

    async def all_ratings(request: web.Request) -> web.Response:
        return web.json_response(everything)

    async def one_rating(request: web.Request) -> web.Response:
        raw = request.match_info["book_id"]
        stars = STARS.get(int(raw)) if raw.isdigit() else None
        if stars is None:
            return web.json_response(
                {"error": f"no rating for book {raw}", "service": settings.app}, status=404
            )
        return web.json_response(
            {"id": int(raw), "stars": stars, "presentation": PRESENTATION[version], "version": version}
        )

    app.router.add_get("/ratings", all_ratings)
    app.router.add_get("/ratings/{book_id}", one_rating)
    return app
