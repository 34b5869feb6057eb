"""One keep-alive connection to an upstream host: writes a request, parses the response with httptools.

The connection knows nothing about routing: it hands response events to the `Exchange` it serves
(`mesh.proxy.exchange`), and goes back to its `EndpointPool` when the exchange says it is reusable.
Flow control is symmetric: a full downstream buffer pauses reading here, a full upstream buffer pauses
the downstream reader.
"""

from __future__ import annotations

import asyncio
import re
import socket
from typing import TYPE_CHECKING

import httptools

from mesh.proxy import replies, response_head

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange
    from mesh.proxy.pool import EndpointPool
    from mesh.view import model


# A 1xx or 204 head that frames a body (Transfer-Encoding, or a non-zero Content-Length): httptools would read
# that body for a 1xx and the client would not for a 204, so either side may desync. Refused, like Envoy
# (require_strict_1xx_and_204_response_headers).
_BODY_FRAMING = re.compile(rb"\r\n(?:transfer-encoding[ \t]*:|content-length[ \t]*:[ \t]*0*[1-9])", re.IGNORECASE)


# A response head still incomplete past this many bytes is refused (502 UPE), as Envoy's max_response_headers_kb
# (60 KiB): the raw head is kept until it ends, and an upstream that never ends it must not grow it unbounded.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024
MAX_INTERIM_RESPONSES = 16  # 1xx answers (dropped, as Envoy does) before the final one of an exchange


def no_delay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY: a small head must not wait for Nagle (both sides of the proxy set it)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def set_tcp_keepalive(transport: asyncio.BaseTransport, pool: model.ConnectionPool) -> None:
    """DestinationRule tcpKeepalive, as Envoy sets it on an upstream socket: SO_KEEPALIVE, and the idle time,
    interval and probe count where set (the OS's defaults otherwise)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", pool.keepalive_time_s), ("TCP_KEEPINTVL", pool.keepalive_interval_s),
                            ("TCP_KEEPCNT", pool.keepalive_probes)):
            option = getattr(socket, name, None)  # Linux has all three; some platforms lack one
            if value is not None and option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        pass  # a socket that closed meanwhile


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "pool", "transport", "parser", "exchange", "idle_since", "closed", "received", "reused", "paused",
        "head", "awaiting_head", "until_eof", "interim", "completed", "completed_keep_alive", "cluster",
        "requests", "opened_at", "interims",
    )

    def __init__(self, pool: EndpointPool, cluster=None) -> None:
        self.pool = pool
        self.cluster = cluster  # the routing.CompiledCluster that opened it: its connections count
        self.requests = 0  # requests sent on it (maxRequestsPerConnection)
        self.opened_at = 0.0  # loop time the connection was established (maxConnectionDuration), set then
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.idle_since = 0.0
        self.closed = False
        self.received = False  # any response byte for the current exchange
        self.reused = False
        self.paused = False
        self.head = b""  # raw bytes of the response head being received (httptools gives no raw view)
        self.awaiting_head = False
        self.until_eof = False  # the response in progress has no length: its body ends when the server closes
        self.interim = False  # a 1xx response is being parsed: not forwarded, the final one follows
        # 1xx answers to the current exchange. After one the parser may not be at a plain message boundary (a
        # 1xx with `Connection: close` leaves llhttp refusing any further byte), so the final answer takes it;
        # more than MAX_INTERIM_RESPONSES is a 502 (each copies the rest of its read: a flood is quadratic).
        self.interims = 0
        # The exchange whose response the parser finished during the current `feed_data`: it is completed
        # (and the connection released) only once the whole read was parsed, so bytes after the response
        # poison this connection instead of being read as the answer to a request sent in the meantime.
        self.completed: Exchange | None = None
        self.completed_keep_alive = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        no_delay(transport)
        if self.cluster is not None and self.cluster.spec.pool.tcp_keepalive:
            set_tcp_keepalive(transport, self.cluster.spec.pool)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the server is misbehaving; never reuse it.
            self.close()
            return
        self.received = True
        if self.awaiting_head:
            if not self.head and not exchange.is_head and not self.interims:  # a response begins here
                known = response_head.known_response(data)
                if known is not None:
                    self._answer_known(exchange, *known)
                    return
            self.head = self.head + data if self.head else data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            completed, self.completed = self.completed, None
            if completed is not None:  # a whole response, then bytes nobody asked for: never reuse
                completed.response_complete(self, False)
            elif self.exchange is exchange:
                self.exchange = None
                exchange.upstream_failed(self, replies.UpstreamProtocolError())
            self.close()
            return
        if self.awaiting_head and len(self.head) > MAX_RESPONSE_HEAD_BYTES and self.exchange is exchange:
            self.exchange = None
            exchange.upstream_failed(self, replies.UpstreamProtocolError())
            self.close()
            return
        completed, self.completed = self.completed, None
        if completed is not None:
            completed.response_complete(self, self.completed_keep_alive)
        elif exchange.out:
            exchange.flush()

    def _answer_known(self, exchange: Exchange, head: bytes, status: int, keep_alive: bool, body: bytes) -> None:
        """A whole response whose head the parser read before (`response_head.known_response`):
        what the parser's callbacks would do with it, without the parser, which stays at the message
        boundary where the response leaves it."""
        self.awaiting_head = False
        exchange.response_head(status, head, keep_alive)
        if body:
            self.on_body(body)
        self.exchange = None
        exchange.response_complete(self, keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            if self.until_eof and exchange.response_started:
                exchange.response_complete(self, False)  # httptools has no EOF call: we end the body
            else:
                exchange.upstream_failed(self, replies.UpstreamReset())
        else:
            self.pool.discard(self)
        self.parser = None  # its callbacks point back here: a cycle that only a full collection would free

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.pause_downstream_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.resume_downstream_reading()

    # -- httptools callbacks ------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.exchange is None:
            raise replies.UpstreamProtocolError()  # a response after the one we waited for

    # No on_header: httptools then parses headers in C without a Python call per header; the head is
    # rewritten from its raw bytes (mesh.proxy.response_head, whose memos spare the regex passes).
    def on_headers_complete(self) -> None:
        # httptools skips empty lines before a status line; the raw head must too, or the status line
        # would be copied to the client as a header line (response_head keeps what follows the first CRLF).
        buf = self.head.lstrip(b"\r\n")
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            raise replies.UpstreamProtocolError()  # bare-LF line endings: never forwarded ambiguously
        raw, self.head = buf[:end], buf[end + 4 :]
        status = self.parser.get_status_code()
        if status < 100 or ((status < 200 or status == 204) and _BODY_FRAMING.search(raw) is not None):
            raise replies.UpstreamProtocolError()  # httptools reads "050" as 50, with a body up to EOF
        if status < 200:
            # Like Envoy, 1xx (103 Early Hints...) are dropped; Expect is never forwarded.
            self.interim = True
            self.interims += 1
            if self.interims > MAX_INTERIM_RESPONSES:
                raise replies.UpstreamProtocolError()
            return
        self.awaiting_head = False
        self.head = b""
        exchange = self.exchange
        keep_alive = self.parser.should_keep_alive()
        if exchange is not None and not exchange.is_head:  # a HEAD's answer parses differently (no body)
            response_head.note_parsed(raw, status, keep_alive)  # before frames_body: see note_parsed
        self.until_eof = not response_head.frames_body(raw)
        if exchange is not None:
            exchange.response_head(status, raw, keep_alive)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:  # the body goes straight to the exchange's output: no call per chunk
            exchange.bytes_sent += len(body)
            exchange.out.append(b"%x\r\n%b\r\n" % (len(body), body) if exchange.chunked_response else body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            self.completed, self.completed_keep_alive = exchange, self.parser.should_keep_alive()

    # -- used by Exchange and EndpointPool ------------------------------------------------------------------
    def send(self, exchange: Exchange, data: bytes) -> None:
        self.exchange = exchange
        self.requests += 1
        self.received = False
        self.until_eof = False
        self.awaiting_head = True
        self.interims = 0
        self.head = b""
        self.transport.write(data)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def is_usable(self) -> bool:
        return not self.closed and self.exchange is None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.close()

    def head_response_done(self, exchange: Exchange, keep_alive: bool) -> None:
        """A HEAD response ends with its head; the parser would wait for a body that never comes, so a
        fresh one reads the next response. Completed like any response, once the current read is parsed."""
        self.exchange = None
        self.parser = httptools.HttpResponseParser(self)
        self.completed, self.completed_keep_alive = exchange, keep_alive

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("busy" if self.exchange else "idle")
        return f"<UpstreamConnection {self.pool.key[0]}:{self.pool.key[1]} {state}>"
