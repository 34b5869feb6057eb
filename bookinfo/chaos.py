"""The chaos switch: an injected error rate and added latency, set from the local machine only.

Owns `ChaosState` (the two knobs and the pure decision), `parse_update` (the one validator of a PUT body),
`middleware` (applies the decision to every request but `/healthz`) and `admin_app` (GET/PUT/DELETE
/chaos), which `server` binds to `CHAOS_HOST` so only the pod or laptop itself can reach it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

CHAOS_HOST = "127.0.0.1"
DEFAULT_STATUS = 500
EXEMPT_PATHS = frozenset({"/healthz"})

Sleep = Callable[[float], Awaitable[Any]]
log = logging.getLogger("bookinfo.chaos")


class ChaosState:
    """The switch's knobs; `decide` is a pure function of them and the injected RNG."""

    __slots__ = ("error_rate", "delay", "status", "rng")

    def __init__(self, rng: random.Random | None = None) -> None:
        self.error_rate = 0.0
        self.delay = 0.0
        self.status = DEFAULT_STATUS  # what an injected failure answers
        self.rng = rng if rng is not None else random.Random()

    def __repr__(self) -> str:
        return f"ChaosState(error_rate={self.error_rate:g} delay={self.delay:g}s status={self.status})"

    @property
    def active(self) -> bool:
        return self.error_rate > 0.0 or self.delay > 0.0

    def as_dict(self) -> dict[str, float]:
        return {"error_rate": self.error_rate, "delay": self.delay, "status": self.status}

    def reset(self) -> None:
        self.error_rate = 0.0
        self.delay = 0.0
        self.status = DEFAULT_STATUS

    def update(self, values: dict[str, float]) -> None:
        self.error_rate = values.get("error_rate", self.error_rate)
        self.delay = values.get("delay", self.delay)
        self.status = int(values.get("status", self.status))

    def decide(self) -> tuple[float, bool]:
        """(seconds to delay, whether to fail) for one request."""
        fail = self.error_rate > 0.0 and self.rng.random() < self.error_rate
        return self.delay, fail


def parse_update(body: Any) -> dict[str, float]:
    """Validate a PUT body: a JSON object with `error_rate` in [0, 1], `delay` >= 0 seconds and/or the
    `status` (400-599) injected failures answer with.

    Keys left out keep their current value. Raises ValueError naming the bad field.
    """
    if not isinstance(body, dict):
        raise ValueError('body must be a JSON object like {"error_rate": 0.5, "delay": 2}')
    unknown = sorted(set(body) - {"error_rate", "delay", "status"})
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}; expected error_rate, delay, status")
    values: dict[str, float] = {}
    for key, value in body.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        values[key] = float(value)
    if not 0.0 <= values.get("error_rate", 0.0) <= 1.0:
        raise ValueError(f"error_rate must be between 0 and 1, got {values['error_rate']:g}")
    if values.get("delay", 0.0) < 0.0:
        raise ValueError(f"delay must be >= 0 seconds, got {values['delay']:g}")
    if "status" in values and (not values["status"].is_integer() or not 400 <= values["status"] <= 599):
        raise ValueError(f"status must be an HTTP error code 400-599, got {values['status']:g}")
    return values


def middleware(state: ChaosState, service: str, sleep: Sleep = asyncio.sleep) -> Any:
    """Delay and/or fail requests as `state` says; `sleep` is injected so tests never wait."""
    failure = {"error": "chaos", "service": service}

    @web.middleware
    async def chaos_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if not state.active or request.path in EXEMPT_PATHS:
            return await handler(request)
        delay, fail = state.decide()
        if delay > 0.0:
            await sleep(delay)
        if fail:
            return web.json_response(failure, status=state.status)
        return await handler(request)

    return chaos_middleware


def admin_app(state: ChaosState, service: str) -> web.Application:
    """GET shows the switch, PUT sets it (400 on bad input), DELETE resets it."""

    async def show(request: web.Request) -> web.Response:
        return web.json_response(state.as_dict())

    async def put(request: web.Request) -> web.Response:
        try:
            values = parse_update(await request.json())
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            return web.json_response({"error": str(exc), "service": service}, status=400)
        state.update(values)
        log.info("chaos set: %r", state)
        return web.json_response(state.as_dict())

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        log.info("chaos reset")
        return web.json_response(state.as_dict())

    app = web.Application()
    app.router.add_get("/chaos", show)
    app.router.add_put("/chaos", put)
    app.router.add_delete("/chaos", reset)
    return app
