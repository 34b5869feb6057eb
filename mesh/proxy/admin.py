"""The proxy's admin endpoint (Envoy's admin API, loopback only): readiness, stats, config dumps.

Subsystems register handlers and dump callbacks by key; this module imports none of them. `/ready` is a
latch: 503 until the first view is applied, 200 after, 503 again while draining. `serve_health` answers only
`GET /healthz/ready` from the same latch (Istio's port 15021) and `GET /stats/prometheus` (read-only, the
admin's own handler, as Istio serves merged metrics on 15020): safe to bind on the pod IP for the kubelet
and for Prometheus.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httptools

from mesh.proxy import replies

log = logging.getLogger("weir.proxy.admin")

HEALTH_PATH = "/healthz/ready"
STATS_PATH = "/stats/prometheus"  # also served on the health port: the pod annotations point there
MAX_ADMIN_URL_BYTES = 16 * 1024

Handler = Callable[[dict[str, list[str]]], "tuple[int, str, bytes] | asyncio.Future"]


class Admin:
    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.dumps: dict[str, Callable[[], object]] = {}
        self.handlers: dict[tuple[str, str], Callable[[dict[str, list[str]]], tuple[int, str, bytes]]] = {}
        self.handle("GET", "/ready", self._ready)
        self.handle("GET", "/config_dump", self._config_dump)
        self.handle("GET", "/", self._index)

    def handle(self, method: str, path: str, handler: Callable[[dict[str, list[str]]], tuple[int, str, bytes]]):
        self.handlers[(method, path)] = handler

    def register_dump(self, key: str, dump: Callable[[], object]) -> None:
        self.dumps[key] = dump

    def _ready(self, query) -> tuple[int, str, bytes]:
        if self.ready and not self.draining:
            return 200, "text/plain", b"LIVE\n"
        return 503, "text/plain", b"DRAINING\n" if self.draining else b"PRE_INITIALIZING\n"

    def _config_dump(self, query) -> tuple[int, str, bytes]:
        dump = {key: read() for key, read in self.dumps.items()}
        resource = query.get("resource", [None])[0]
        if resource:
            view = (dump.get("proxy") or {}).get("view") or {}
            names = {"routes": "route_tables", "clusters": "clusters", "endpoints": "endpoints",
                     "listeners": "listeners"}
            if resource not in names and resource not in dump:
                return 400, "text/plain", f"unknown resource {resource}\n".encode()
            dump = dump[resource] if resource in dump else view.get(names[resource], [])
        return 200, "application/json", json.dumps(dump, indent=2, sort_keys=True).encode()

    def _index(self, query) -> tuple[int, str, bytes]:
        paths = sorted(f"{m} {p}" for m, p in self.handlers)
        return 200, "text/plain", ("\n".join(paths) + "\n").encode()

    def dispatch(self, method: str, target: str) -> tuple[int, str, bytes]:
        parts = urlsplit(target)
        handler = self.handlers.get((method, parts.path))
        if handler is None:
            return 404, "text/plain", b"not found\n"
        try:
            return handler(parse_qs(parts.query))
        except Exception:  # an admin bug must not kill the proxy
            log.exception("admin handler %s failed", parts.path)
            return 500, "text/plain", b"internal error\n"

    async def serve(self, host: str, port: int) -> asyncio.AbstractServer:
        return await asyncio.get_running_loop().create_server(lambda: _AdminConnection(self), host, port)

    def dispatch_health(self, method: str, target: str) -> tuple[int, str, bytes]:
        path = urlsplit(target).path
        if method == "GET" and path == HEALTH_PATH:
            return self._ready({})
        if method == "GET" and path == STATS_PATH:
            return self.dispatch(method, target)
        return 404, "text/plain", b"not found\n"

    async def serve_health(self, host: str, port: int) -> asyncio.AbstractServer:
        return await asyncio.get_running_loop().create_server(
            lambda: _AdminConnection(self, self.dispatch_health), host, port)


class _AdminConnection(asyncio.Protocol):
    __slots__ = ("admin", "dispatch", "transport", "parser", "url")

    def __init__(self, admin: Admin, dispatch: Callable[[str, str], tuple[int, str, bytes]] | None = None) -> None:
        self.admin = admin
        self.dispatch = dispatch or admin.dispatch
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, replies.UriTooLong):
                self.transport.write(replies.local_reply(414, b"uri too long\n", False))
                self.transport.close()
                return
            self.transport.write(replies.local_reply(400, b"bad request\n", False))
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_ADMIN_URL_BYTES:  # httptools hands the target over in pieces, unbounded
            raise replies.UriTooLong()

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        status, content_type, body = self.dispatch(method, self.url.decode("latin-1"))
        self.url = b""
        keep_alive = self.parser.should_keep_alive()
        self.transport.write(replies.local_reply(status, body, keep_alive, content_type=content_type.encode()))
        if not keep_alive:
            self.transport.close()
