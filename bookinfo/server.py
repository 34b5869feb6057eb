"""What every bookinfo-lite app shares: health, JSON access log, error mapping, chaos and serving.

`base_app` builds the aiohttp application an app module (`ratings`, `books`, `gw`, `ui`) adds its routes
to; it owns the `calls.Caller` lifecycle (one keep-alive session per process). `start`/`serve` bind the
app on HOST:PORT and the chaos switch on 127.0.0.1:CHAOS_PORT, and shut both down in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bookinfo import calls, chaos, config

SETTINGS = web.AppKey("settings", config.Settings)
CHAOS = web.AppKey("chaos", chaos.ChaosState)
CALLER = web.AppKey("caller", calls.Caller)

# In-flight requests get this long to finish once shutdown starts.
DRAIN_TIMEOUT_S = 5.0

access_log = logging.getLogger("bookinfo.access")
log = logging.getLogger("bookinfo")


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON line per request, written by aiohttp after the response is sent."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "access",
            extra={
                "fields": {
                    "ts": round(_now(), 3),
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "duration_ms": round(time * 1000.0, 2),
                    "x-request-id": request.headers.get("x-request-id"),
                }
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class JsonFormatter(logging.Formatter):
    """Formats every record as one JSON line; access records carry their fields ready-made."""

    def __init__(self, app: str, version: str) -> None:
        super().__init__()
        self._static = {"app": app, "version": version}

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields is None:
            fields = {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
            if record.exc_info:
                fields["exc"] = self.formatException(record.exc_info)
        return json.dumps({**self._static, **fields}, ensure_ascii=False, separators=(",", ":"))


def configure_logging(settings: config.Settings) -> None:
    """JSON lines to stdout: this is the app log `meshctl logs` shows."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(settings.app, settings.version))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _now() -> float:
    return time.time()


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """The one place failures become replies: `CallError` is passed on, anything else is a 500."""
    try:
        return await handler(request)
    except calls.CallError as exc:
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        service = request.app[SETTINGS].app
        return web.json_response({"error": "internal error", "service": service}, status=500)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def base_app(
    settings: config.Settings,
    *,
    rng: random.Random | None = None,
    sleep: chaos.Sleep | None = None,
) -> web.Application:
    """The shared application: /healthz, error mapping, chaos, and a `Caller` when the app calls out."""
    state = chaos.ChaosState(rng)
    app = web.Application(
        middlewares=[error_middleware, chaos.middleware(state, settings.app, sleep or asyncio.sleep)]
    )
    app[SETTINGS] = settings
    app[CHAOS] = state
    app.router.add_get("/healthz", healthz)
    if settings.callee is not None:
        app.cleanup_ctx.append(_caller_context)
    return app


async def _caller_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.callee is not None
    session = calls.new_session()
    app[CALLER] = calls.Caller(session, settings.callee, settings.proxy)
    yield
    await session.close()


@dataclass(slots=True)
class Running:
    """The started runners; `addresses` are the bound (host, port) pairs, for logs and tests."""

    app_runner: web.AppRunner
    chaos_runner: web.AppRunner | None

    @property
    def addresses(self) -> list[Any]:
        return list(self.app_runner.addresses)

    @property
    def chaos_addresses(self) -> list[Any]:
        return list(self.chaos_runner.addresses) if self.chaos_runner else []

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests up to DRAIN_TIMEOUT_S, close the session, then chaos."""
        await self.app_runner.cleanup()
        if self.chaos_runner is not None:
            await self.chaos_runner.cleanup()


async def start(app: web.Application, settings: config.Settings) -> Running:
    """Bind the app on HOST:PORT and, when CHAOS_PORT is set, its chaos switch on 127.0.0.1 only."""
    runner = web.AppRunner(
        app, access_log_class=JsonAccessLogger, access_log=access_log, shutdown_timeout=DRAIN_TIMEOUT_S
    )
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    chaos_runner = None
    if settings.chaos_port is not None:
        chaos_runner = web.AppRunner(chaos.admin_app(app[CHAOS], settings.app), access_log=None)
        await chaos_runner.setup()
        await web.TCPSite(chaos_runner, chaos.CHAOS_HOST, settings.chaos_port).start()
    running = Running(runner, chaos_runner)
    log.info(
        "%s %s listening on %s, chaos on %s",
        settings.app,
        settings.version,
        running.addresses,
        running.chaos_addresses or "off",
    )
    return running


async def serve(app: web.Application, settings: config.Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down in order."""
    running = await start(app, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await running.stop()
