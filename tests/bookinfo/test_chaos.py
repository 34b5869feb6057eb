"""The chaos switch: validation, seeded decisions, injected delay, the admin API and its loopback binding."""

from __future__ import annotations

import math
import random

import aiohttp
import pytest

from bookinfo import chaos, config, ratings, server
from tests.bookinfo.helpers import client_for, make_settings


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"delay": -1},
        {"delay": math.inf},
        {"error_rate": "0.5"},
        {"error_rate": True},
        {"latency": 1},
        [0.5],
        None,
    ],
)
def test_parse_update_rejects(body: object) -> None:
    with pytest.raises(ValueError):
        chaos.parse_update(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error_rate": 0, "delay": 0}, {"error_rate": 0.0, "delay": 0.0}),
        ({"error_rate": 1}, {"error_rate": 1.0}),
        ({"delay": 2.5}, {"delay": 2.5}),
        ({}, {}),
    ],
)
def test_parse_update_accepts(body: dict[str, float], expected: dict[str, float]) -> None:
    assert chaos.parse_update(body) == expected


def test_decisions_follow_the_seeded_rng() -> None:
    state = chaos.ChaosState(random.Random(7))
    state.update({"error_rate": 0.5})
    reference = random.Random(7)
    expected = [reference.random() < 0.5 for _ in range(50)]
    assert [state.decide()[1] for _ in range(50)] == expected
    assert 10 < sum(expected) < 40
    assert repr(state) == "ChaosState(error_rate=0.5 delay=0s status=500)"


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


async def test_error_rate_and_delay_apply_to_requests_but_not_healthz() -> None:
    sleep = FakeSleep()
    app = ratings.create_app(make_settings("ratings"), rng=random.Random(1), sleep=sleep)
    app[server.CHAOS].update({"error_rate": 1.0, "delay": 2.0})
    async with client_for(app) as client:
        failed = await client.get("/ratings")
        assert failed.status == 500
        assert await failed.json() == {"error": "chaos", "service": "ratings"}
        health = await client.get("/healthz")
        assert health.status == 200
    assert sleep.calls == [2.0]


async def test_delay_only_still_answers() -> None:
    sleep = FakeSleep()
    app = ratings.create_app(make_settings("ratings"), rng=random.Random(1), sleep=sleep)
    app[server.CHAOS].update({"delay": 5.0})
    async with client_for(app) as client:
        assert (await client.get("/ratings")).status == 200
    assert sleep.calls == [5.0]


async def test_injected_failures_answer_the_chosen_status() -> None:
    app = ratings.create_app(make_settings("ratings"), rng=random.Random(3))
    app[server.CHAOS].update({"error_rate": 1.0, "status": 503})
    async with client_for(app) as client:
        resp = await client.get("/ratings")
        assert resp.status == 503 and (await resp.json()) == {"error": "chaos", "service": "ratings"}


async def test_seeded_error_rate_over_http() -> None:
    app = ratings.create_app(make_settings("ratings"), rng=random.Random(3))
    app[server.CHAOS].update({"error_rate": 0.3})
    reference = random.Random(3)
    expected = [500 if reference.random() < 0.3 else 200 for _ in range(20)]
    async with client_for(app) as client:
        seen = [(await client.get("/ratings")).status for _ in range(20)]
    assert seen == expected


async def test_admin_api() -> None:
    state = chaos.ChaosState(random.Random(0))
    async with client_for(chaos.admin_app(state, "books")) as client:
        assert await (await client.get("/chaos")).json() == {"error_rate": 0.0, "delay": 0.0, "status": 500}
        resp = await client.put("/chaos", json={"error_rate": 0.25, "delay": 1})
        assert resp.status == 200
        assert await resp.json() == {"error_rate": 0.25, "delay": 1.0, "status": 500}
        resp = await client.put("/chaos", json={"delay": 0.5, "status": 503})  # keys left out are kept
        assert await resp.json() == {"error_rate": 0.25, "delay": 0.5, "status": 503}
        for bad in ({"error_rate": 2}, {"delay": -1}, {"nope": 1}, {"status": 200}, {"status": 503.5}):
            resp = await client.put("/chaos", json=bad)
            assert resp.status == 400
            assert (await resp.json())["service"] == "books"
        resp = await client.put("/chaos", data=b"{not json")
        assert resp.status == 400
        assert await (await client.get("/chaos")).json() == {"error_rate": 0.25, "delay": 0.5, "status": 503}
        resp = await client.delete("/chaos")
        assert await resp.json() == {"error_rate": 0.0, "delay": 0.0, "status": 500}
    assert not state.active


async def test_chaos_switch_binds_loopback_only_and_drives_the_app() -> None:
    settings = config.Settings(app="ratings", host="0.0.0.0", port=0, chaos_port=0)
    app = ratings.create_app(settings, rng=random.Random(0))
    running = await server.start(app, settings)
    try:
        assert [addr[0] for addr in running.chaos_addresses] == ["127.0.0.1"]
        assert running.addresses[0][0] == "0.0.0.0"
        assert app[server.CHAOS] is not None
        chaos_port = running.chaos_addresses[0][1]
        async with aiohttp.ClientSession() as session:
            async with session.put(f"http://127.0.0.1:{chaos_port}/chaos", json={"error_rate": 1}) as resp:
                assert resp.status == 200
            app_port = running.addresses[0][1]
            async with session.get(f"http://127.0.0.1:{app_port}/ratings") as resp:
                assert resp.status == 500
    finally:
        await running.stop()


async def test_no_chaos_port_no_switch() -> None:
    settings = make_settings("ratings")
    running = await server.start(ratings.create_app(settings), settings)
    try:
        assert running.chaos_addresses == []
    finally:
        await running.stop()
