"""ratings: the JSON contract of both versions."""

from __future__ import annotations

import pytest

from bookinfo import ratings
from tests.bookinfo.helpers import client_for, make_settings

PRESENTATIONS = {"v1": ":-)", "v2": "¯\\_(ツ)_/¯"}


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_all_ratings(version: str) -> None:
    async with client_for(ratings.create_app(make_settings("ratings", version))) as client:
        resp = await client.get("/ratings")
        assert resp.status == 200
        body = await resp.json()
    assert body["version"] == version
    assert body["ratings"]["1"] == {"stars": 4, "presentation": PRESENTATIONS[version]}
    assert set(body["ratings"]) == {"1", "2", "3", "4", "5"}
    assert all(r["presentation"] == PRESENTATIONS[version] for r in body["ratings"].values())
    assert all(1 <= r["stars"] <= 5 for r in body["ratings"].values())


async def test_one_rating_and_unknown_id() -> None:
    async with client_for(ratings.create_app(make_settings("ratings", "v2"))) as client:
        one = await client.get("/ratings/2")
        missing = await client.get("/ratings/99")
        junk = await client.get("/ratings/abc")
        assert one.status == 200
        assert await one.json() == {"id": 2, "stars": 5, "presentation": PRESENTATIONS["v2"], "version": "v2"}
        assert missing.status == 404
        assert await missing.json() == {"error": "no rating for book 99", "service": "ratings"}
        assert junk.status == 404
