"""The measuring side of `bench.hostile`: a recording upstream, and probes that send raw bytes to a proxy.

`RecordingUpstream` is an HTTP/1.1 server on loopback (asyncio in a thread, parsed with httptools) that
answers every complete request `200 ok` and records its request line and framing, so a probe can say what a
proxy forwarded. `probe` sends one vector on a fresh connection and reads until the proxy closes or has sent
the answers the vector expects. `SLOW_CLIENTS` are the slowloris checks: each returns a table cell with what happened and when.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field

import httptools

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
# A probe reads until the answers it expects are complete (or the proxy closes): on a loaded machine a
# pipelined or 100-continue answer can come well after the first. This long bounds a proxy that never does.
READ_TIMEOUT_S = 15.0
QUIET_S = 0.6  # once the expected answers are in: anything more (a 400 after them, the close) comes this soon
HOST = b"Host: up:9080\r\n"


@dataclass
class Forwarded:
    line: str
    framing: str
    upgrade: bool = False


class _UpstreamProtocol(asyncio.Protocol):
    def __init__(self, owner: RecordingUpstream) -> None:
        self.owner = owner
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            # Forwarded, but not valid HTTP/1.1 for a strict server: recorded, so the row shows it got here.
            self.owner.requests.append(Forwarded("bytes a strict parser refuses", "?"))
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers = b"", {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_message_complete(self) -> None:
        headers = self.headers
        if b"transfer-encoding" in headers:
            framing = "TE " + headers[b"transfer-encoding"].decode("latin-1")
        elif b"content-length" in headers:
            framing = "CL " + headers[b"content-length"].decode("latin-1")
        else:
            framing = "no body"
        line = f"{self.parser.get_method().decode()} {self.url.decode('latin-1')[:40]}"
        self.owner.requests.append(Forwarded(line, framing, b"upgrade" in headers))
        self.transport.write(OK)


class RecordingUpstream:
    def __init__(self) -> None:
        self.requests: list[Forwarded] = []
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None

    def start(self) -> None:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(lambda: _UpstreamProtocol(self), "127.0.0.1", 0), self.loop)
        self.server = future.result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class Result:
    statuses: list[int] = field(default_factory=list)
    closed: bool = False
    received: int = 0  # bytes the client got
    upstream: list[Forwarded] = field(default_factory=list)

    def describe(self) -> str:
        answer = " + ".join(str(s) for s in self.statuses) or (
            "an answer without status line" if self.received else "no answer")
        if self.closed:
            answer += ", closed"
        if not self.upstream:
            return answer + " → nothing"
        sent: list[str] = []
        for f in self.upstream:
            text = f.line if f.framing == "?" else f"`{f.line}` {f.framing}{' +Upgrade' if f.upgrade else ''}"
            if f.framing == "?" and sent and sent[-1].startswith(text):
                sent[-1] = text + " (tried twice)"  # the proxy retried on another connection
            else:
                sent.append(text)
        return f"{answer} → {'; '.join(sent)}"


def statuses(data: bytes) -> list[int]:
    """Status codes of the responses in `data` (as far as they parse)."""
    return _parse(data)[0]


def _parse(data: bytes) -> tuple[list[int], int]:
    """(status codes of the responses in `data`, how many final (non-1xx) responses are complete)."""
    found: list[int] = []
    finals = 0

    class Collector:
        def on_headers_complete(self) -> None:
            found.append(parser.get_status_code())

        def on_message_complete(self) -> None:
            nonlocal finals
            finals += found[-1] >= 200

    parser = httptools.HttpResponseParser(Collector())
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        pass
    return found, finals


def _read(sock: socket.socket, finals: int, closes: bool) -> tuple[bytes, bool]:
    """Read until EOF (closed: True); or, unless `closes`, until `finals` final responses are complete and
    the peer is then quiet; or until READ_TIMEOUT_S."""
    data = b""
    deadline = time.monotonic() + READ_TIMEOUT_S
    answered = False
    while True:
        wait = QUIET_S if answered else deadline - time.monotonic()
        if wait <= 0:
            return data, False
        sock.settimeout(wait)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if answered:
                return data, False
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
        answered = not closes and _parse(data)[1] >= finals


def probe(port: int, data: bytes, upstream: RecordingUpstream, finals: int = 1, closes: bool = False) -> Result:
    """Send `data` on a fresh connection; read the `finals` final answers it should get (and, if `closes`,
    until the proxy closes the connection)."""
    upstream.requests.clear()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received, closed = _read(sock, finals, closes)
    time.sleep(0.05)
    return Result(statuses(received), closed, len(received), list(upstream.requests))


def _timed(port: int, first: bytes, drip: bytes | None, limit_s: float) -> str:
    """Send `first`, then `drip` every 0.5 s, until the proxy answers or closes: what and after how long."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(first)
        sock.settimeout(0.5)
        data = b""
        while time.monotonic() - started < limit_s:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if drip:
                    try:
                        sock.sendall(drip)
                    except OSError:
                        break
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        else:
            return f"still open after {limit_s:.0f} s"
    codes = statuses(data)
    what = " + ".join(str(c) for c in codes) + " and closed" if codes else "closed without an answer"
    return f"{what} after {time.monotonic() - started:.1f} s"


def _slow_headers(port: int, upstream: RecordingUpstream) -> str:
    return _timed(port, b"GET / HTTP/1.1\r\n" + HOST, b"X-Drip: 1\r\n", 12.0)


def _silent(port: int, upstream: RecordingUpstream) -> str:
    return _timed(port, b"", None, 12.0)


def _slow_body(port: int, upstream: RecordingUpstream) -> str:
    return _timed(port, b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 100\r\n\r\nabc", None, 12.0)


def _idle(port: int, upstream: RecordingUpstream) -> str:
    return _timed(port, b"GET / HTTP/1.1\r\n" + HOST + b"\r\n", None, 12.0).replace("200 and closed", "200, then closed")


SLOW_CLIENTS = {"slow-headers": _slow_headers, "silent-connection": _silent, "slow-body": _slow_body,
                "idle-keep-alive": _idle}
SLOW_CLIENT_TEXT = {
    "slow-headers": ("sends a request line, then one header line every 0.5 s, never the end of the head",
                     "408 after `request_headers_timeout` (off by default)"),
    "silent-connection": ("connects and sends nothing", "closed after `idle_timeout` (1 h by default)"),
    "slow-body": ("sends a head with Content-Length: 100 and 3 bytes of body, then nothing",
                  "408 after `stream_idle_timeout` (5 min by default)"),
    "idle-keep-alive": ("one GET, answered, then nothing", "closed after `idle_timeout` (1 h by default)"),
}
