"""The floor under any Python proxy: a minimal uvloop + httptools keep-alive reverse proxy, measured by `make bench`
next to Weir and nginx ("minimal Python proxy"), as issue 2 describes the one its targets were set against.

It does what every proxy on this path must and nothing more: parse the request (llhttp), write one head
upstream over a pooled keep-alive connection (LIFO, TCP_NODELAY), parse the answer to know where it ends,
pass its bytes back as they come. Requests without a body only (what the bench sends; one with a body is
answered 501). No routing, no metrics, no limits, no timeouts, no retries: not a proxy to deploy, a measure
of what the event loop, the parser, the system calls and the wakeups cost on this machine.
What Weir spends above it is Weir's own work; below it, a Python proxy cannot go.

Measured on the bench VM (2026-11-27, 1 KiB answers): 27,600 user-space instructions per request under
callgrind (Weir with metrics only: 119,600); at 1000 requests/s 0.073-0.107 CPU-s per 1000 requests over
five runs, against 0.121-0.167 for Weir's sidecar in the same runs and 0.08-0.10 for nginx that day.

    .venv/bin/python -m bench.floor --upstream-port 8081 --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import socket

import httptools

HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"))
BODY_HEADERS = frozenset((b"content-length", b"transfer-encoding"))
NOT_IMPLEMENTED = b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def _no_delay(transport: asyncio.Transport) -> None:
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Upstream(asyncio.Protocol):
    """One pooled connection to the upstream; `client` is the downstream connection it answers, if busy."""

    __slots__ = ("proxy", "transport", "parser", "client")

    def __init__(self, proxy: FloorProxy) -> None:
        self.proxy = proxy
        self.client: Downstream | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parser = httptools.HttpResponseParser(self)
        _no_delay(transport)

    def data_received(self, data: bytes) -> None:
        if self.client is None:  # bytes from an idle connection: nothing asked for them
            self.transport.close()
            return
        self.client.transport.write(data)  # the answer's bytes as they come: one write per read
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        if self.parser.should_keep_alive():
            self.proxy.idle.append(self)
        else:
            self.transport.close()
        client.answered()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.proxy.idle:
            self.proxy.idle.remove(self)
        if self.client is not None:
            self.client.transport.close()


class Downstream(asyncio.Protocol):
    """One client connection, one request at a time: no pipelining (neither wrk nor the open-loop client pipelines)."""

    __slots__ = ("proxy", "transport", "parser", "url", "head", "has_body", "upstream")

    def __init__(self, proxy: FloorProxy) -> None:
        self.proxy = proxy
        self.url = b""
        self.head: list[bytes] = []
        self.has_body = False
        self.upstream: Upstream | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        _no_delay(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in BODY_HEADERS:
            self.has_body = self.has_body or not (lower == b"content-length" and value.strip() == b"0")
        elif lower not in HOP_BY_HOP:
            self.head.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        if self.has_body:
            self.transport.write(NOT_IMPLEMENTED)
            self.transport.close()
            return
        head = [self.parser.get_method(), b" ", self.url, b" HTTP/1.1\r\n", *self.head, b"\r\n"]
        self.url, self.head = b"", []
        self.proxy.forward(self, b"".join(head))

    def answered(self) -> None:
        self.upstream = None
        if not self.parser.should_keep_alive():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.transport.close()


class FloorProxy:
    """The listener's state: the upstream address and its idle connections, most recent last."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.idle: list[Upstream] = []

    def forward(self, client: Downstream, head: bytes) -> None:
        if self.idle:
            upstream = self.idle.pop()
            upstream.client, client.upstream = client, upstream
            upstream.transport.write(head)
        else:
            asyncio.get_running_loop().create_task(self._connect(client, head))

    async def _connect(self, client: Downstream, head: bytes) -> None:
        try:
            _, upstream = await asyncio.get_running_loop().create_connection(lambda: Upstream(self), *self.upstream)
        except OSError:
            client.transport.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            client.transport.close()
            return
        upstream.client, client.upstream = client, upstream
        upstream.transport.write(head)


async def serve(upstream_port: int, port: int, host: str = "127.0.0.1") -> asyncio.AbstractServer:
    proxy = FloorProxy("127.0.0.1", upstream_port)
    return await asyncio.get_running_loop().create_server(lambda: Downstream(proxy), host, port, backlog=4096)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.floor", description=__doc__.split("\n")[0])
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    async def run() -> None:
        server = await serve(args.upstream_port, args.port)
        await server.serve_forever()

    import uvloop

    uvloop.run(run())


if __name__ == "__main__":
    main()
