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
ADMIN_REQUEST_TIMEOUT_S = 10.0  # from the accept to the request's end

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
    """One request per connection, answered `Connection: close`, within ADMIN_REQUEST_TIMEOUT_S of the accept.
    The health port is reachable from the pod network: a peer pipelining scrapes it never reads, or holding
    connections open, must not queue answers or descriptors without bound (Prometheus and kubelet probes
    open a connection per request anyway)."""

    __slots__ = ("admin", "dispatch", "transport", "parser", "url", "timer", "answered", "loop")

    def __init__(self, admin: Admin, dispatch: Callable[[str, str], tuple[int, str, bytes]] | None = None,
                 loop=None) -> None:
        self.admin = admin
        self.loop = loop  # the event loop's timers (None: the running loop's); tests pass a fake clock
        self.dispatch = dispatch or admin.dispatch
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.timer: asyncio.TimerHandle | None = None
        self.answered = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        loop = self.loop or asyncio.get_running_loop()
        self.timer = loop.call_later(ADMIN_REQUEST_TIMEOUT_S, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.parser = None  # its callbacks point back here

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # bytes after the one request: the connection is closing
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.answered:
                return
            if isinstance(exc.__context__, replies.UriTooLong):
                self._answer(414, "text/plain", b"uri too long\n")
                return
            self._answer(400, "text/plain", b"bad request\n")

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_ADMIN_URL_BYTES:  # httptools hands the target over in pieces, unbounded
            raise replies.UriTooLong()

    def on_message_complete(self) -> None:
        if not self.answered:
            method = self.parser.get_method().decode()
            self._answer(*self.dispatch(method, self.url.decode("latin-1")))

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.answered = True
        self.transport.write(replies.local_reply(status, body, False, content_type=content_type.encode()))
        self.transport.close()
