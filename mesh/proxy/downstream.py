"""The client side of the proxy: one asyncio protocol per accepted connection, parsed with httptools.

Owns HTTP/1.1 keep-alive and pipelining (exchanges are served one at a time, in order; later ones wait
with their bodies buffered up to a bound), request limits (URL length, header bytes and count: 414/431),
malformed input (4xx/5xx and close, never forwarded: the checks are `mesh.proxy.request_limits`'s, which
also owns the connection's timeouts), and flow control toward the upstream connection. An `Upgrade`
request goes upstream as plain HTTP (the header is hop-by-hop); the bytes after it are the next request.
What happens to a request is decided by `mesh.proxy.forwarding`; `mesh.proxy.exchange` carries it.
Timeouts, drain and the refusal of malformed input are `mesh.proxy.downstream_ending`'s, a base of the
connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import httptools

from mesh.proxy import replies, request_limits, upstream
from mesh.proxy.downstream_ending import EndingPaths
from mesh.proxy.exchange import Exchange
from mesh.proxy.matching import RequestHead

if TYPE_CHECKING:
    from mesh.proxy.forwarding import Forwarding

# Request line target: longer is refused with 414 (Envoy counts it in its 60 KiB header budget).
MAX_URL_BYTES = 16 * 1024
# Total request header bytes (Envoy's default max_request_headers_kb is 60).
MAX_HEADER_BYTES = 60 * 1024
# Number of request headers (Envoy's default max_headers_count is 100).
MAX_HEADER_COUNT = 100
# Bytes of a request head still arriving after the read it began in: its request line and header lines, with
# their syntax. httptools keeps a header's name and value until its line ends, whatever their size, so a head
# is bounded here, read by read, not only by the limits its callbacks check (a value that never ends never
# reaches on_header): at most one read past this is held.
MAX_HEAD_BYTES = MAX_URL_BYTES + MAX_HEADER_BYTES + 8 * 1024
# Why the socket is not read (`DownstreamConnection.paused`, a set of these bits; read again when none is left).
PIPELINE = 1  # MAX_PIPELINED requests wait behind the active one
BODY_BUFFER = 2  # a request body is buffered while no upstream takes it (mesh.proxy.exchange)
UPSTREAM_FULL = 4  # the upstream connection's socket is full (its pause_writing)
CLIENT_FULL = 8  # the client's socket is full, and the active request has all its body: no new request is read
REFUSED = 16  # a protocol error is pending behind earlier requests: the parser cannot go on, until close
# Pipelined requests waiting behind the active one; more and we stop reading the socket.
MAX_PIPELINED = 16
# Pipelined requests parsed from reads already taken when reading stopped (one read can hold thousands of
# small requests): beyond this, the ones before are answered, then 503 UO and the connection is closed.
MAX_QUEUED = 128

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Host header → (host, port), shared by all connections; bounded because clients choose the keys.
MAX_CACHED_HOSTS = 1024
MAX_CACHED_HOST_BYTES = 270  # a DNS name (253) and a port: longer Host values are split each time, never kept
_HOSTS: dict[bytes, tuple[str, int]] = {}


def split_host(value: str, default_port: int) -> tuple[str, int]:
    """`books:9080` → ("books", 9080); `[::1]:80` → ("::1", 80); no port → default."""
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[1:end], value[end + 1 :]
        return host, int(rest[1:]) if rest.startswith(":") and _is_port(rest[1:]) else default_port
    host, sep, port = value.rpartition(":")
    if sep and _is_port(port):
        return host, int(port)
    return value, default_port


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit() alone accepts "²", which int() refuses


class DownstreamConnection(EndingPaths, asyncio.Protocol):
    # Pause reasons, for mesh.proxy.exchange and the ending paths (which cannot import this module).
    BODY_BUFFER = BODY_BUFFER
    UPSTREAM_FULL = UPSTREAM_FULL
    REFUSED = REFUSED
    __slots__ = (
        "forwarding", "listen_port", "transport", "parser", "url", "headers", "header_bytes", "current",
        "active", "queue", "paused", "closed", "peer_ip", "http11", "loop", "registry", "deferred_error",
        "peer_identity", "sni", "secure", "tcp_labels", "in_headers", "timeouts", "max_body", "draining",
        "head_bytes", "write_blocked", "awaiting_chunk", "trailer_bytes", "progressed",
    )

    def __init__(self, forwarding: Forwarding, listen_port: int, registry: set) -> None:
        self.forwarding = forwarding
        self.listen_port = listen_port
        self.registry = registry  # the proxy's open connections, for draining
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.current: Exchange | None = None
        self.active: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.paused = 0  # the reasons reading is paused (PIPELINE, BODY_BUFFER...): 0, reading
        self.closed = False
        self.peer_ip = ""
        self.http11 = True
        self.loop = forwarding.loop
        limits = forwarding.runtime.limits
        self.max_body = limits.max_body_bytes  # 0: no limit
        self.in_headers = False  # a request's first bytes are in, its headers are not complete yet
        self.head_bytes = 0  # bytes read for that head after the read it began in (MAX_HEAD_BYTES)
        self.timeouts = request_limits.ConnectionTimer(self, limits, self.loop)
        # A malformed request pipelined behind one in flight: answered after the earlier ones, in order.
        self.deferred_error: replies.ProxyError | None = None
        # Set by the TLS layer (mesh.proxy.tls) once the handshake is done: the client's verified SPIFFE ID
        # (None: plaintext, or TLS without a client certificate), the SNI it sent ("": plaintext, or none
        # sent) and whether the connection is TLS at all.
        self.peer_identity: str | None = None
        self.sni = ""
        self.secure = False
        self.tcp_labels: tuple = ()
        self.draining = False  # the proxy is shutting down: the last response says `Connection: close`
        self.write_blocked = False  # the client is not reading its answers: nothing more is read from it
        # A chunk header was parsed and no byte of its data yet: its data, or a last chunk's trailers, follow.
        # Reads that are all trailer bytes are counted (`trailer_bytes`, held to MAX_HEADER_BYTES): httptools
        # keeps a trailer line until it ends, as it does a header.
        self.awaiting_chunk = False
        self.trailer_bytes = 0
        self.progressed = False  # a head ended, a message began, or body or chunk bytes came, in this read

    # -- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.registry.add(self)
        runtime = self.forwarding.runtime
        self.tcp_labels = runtime.tcp_labels(self.forwarding.direction, self.peer_identity)
        runtime.tcp.open(self.tcp_labels)
        upstream.no_delay(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0]
        self.timeouts.start()

    def data_received(self, data: bytes) -> None:
        in_headers, awaiting_chunk = self.in_headers, self.awaiting_chunk
        self.progressed = False
        while True:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                self._protocol_error(cause if isinstance(cause, replies.ProxyError) else replies.BadRequest())
            except httptools.HttpParserUpgrade as exc:
                # The upgrade request went upstream as plain HTTP (Upgrade is hop-by-hop), so what follows
                # it is parsed as the next request, whichever read it arrived in, never passed on raw.
                offset = exc.args[0]
                if offset < len(data) and not self.closed:
                    data = data[offset:]
                    continue
            except httptools.HttpParserError:
                self._protocol_error(replies.BadRequest())
            break
        if self.closed:
            return
        if not self.progressed:
            # The whole read went to one head, or one last chunk's trailers, still arriving: counted, since
            # httptools keeps a header or trailer line until it ends (only a read that makes no progress is
            # all of it: a head's end, a body byte or a chunk's end are progress).
            if in_headers and self.in_headers:
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD_BYTES:
                    self._protocol_error(replies.HeadersTooLarge())
                    return
            elif awaiting_chunk and self.awaiting_chunk:
                self.trailer_bytes += len(data)
                if self.trailer_bytes > MAX_HEADER_BYTES:
                    self._protocol_error(replies.HeadersTooLarge())
                    return
        # The connection's timer is lazy (request_limits.ConnectionTimer): only a head left incomplete by
        # this read, or a body being read, is noted; a request whose head came whole costs nothing here.
        active = self.active
        if active is None:
            if self.in_headers and self.timeouts.phase != request_limits.HEADERS:
                self.timeouts.begin(request_limits.HEADERS)  # a request's first bytes: its headers are due
        elif not active.request_complete:
            self.timeouts.body_read()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.registry.discard(self)
        if self.tcp_labels:
            self.forwarding.runtime.tcp.close(self.tcp_labels)
        if self.active is not None:
            self.active.abort()
            self.active = None
        for waiting in self.queue:
            waiting.abort()
        self.queue.clear()
        self.released()

    def released(self) -> None:
        """Drop what points back here. A live connection is a cycle (its parser's callbacks, its timer, its
        exchange), and a TLS one holds ~300 KiB of uvloop and OpenSSL buffers through its transport; with
        the edges cut, reference counting frees it as it closes instead of the next full collection, which
        on a busy proxy comes seldom (mesh.proxy.heap collects on a timer as a backstop)."""
        self.timeouts.close()
        self.current = None
        self.parser = None

    def pause_writing(self) -> None:
        """The client's socket is full: no more of the answer is read from the upstream, and no new request from
        the client (local replies and later answers would queue here without bound). A request body still
        arriving is read on: its upstream may answer only once it has it."""
        self.write_blocked = True
        active = self.active
        if active is None or active.request_complete:
            self.pause_reading(CLIENT_FULL)
        if active is not None and active.upstream is not None:
            active.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_blocked = False
        active = self.active
        if active is not None and active.upstream is not None:
            active.upstream.resume_reading()
        self.resume_reading(CLIENT_FULL)

    # -- httptools callbacks ------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_headers = self.progressed = True
        self.header_bytes = self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL_BYTES:
            raise replies.UriTooLong()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES or len(self.headers) >= MAX_HEADER_COUNT:
            raise replies.HeadersTooLarge()
        if self.in_headers:
            self.headers.append((name.lower(), value))
        # Else a chunked body's trailers: held to the header budget, not forwarded (as Envoy without
        # enable_trailers; the body is re-chunked with a bare last chunk) and never taken for the next
        # request's headers.

    def on_headers_complete(self) -> None:
        if self.active is not None and len(self.queue) >= MAX_QUEUED:
            raise replies.Overflow()  # never queued: the ones before are answered, then 503 and close
        parser = self.parser
        self.in_headers = False
        self.progressed = True
        headers = self.headers
        keep_alive = parser.should_keep_alive()
        version = request_limits.http_version(parser, keep_alive, headers)
        self.http11 = version == "1.1"
        method = parser.get_method().decode("latin-1")
        url = self.url
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        host_header, path, chunked, has_body, expect_continue = request_limits.read_head(
            method, version, url, headers, self.max_body)
        split = _HOSTS.get(host_header)
        if split is None:
            if host_header and not request_limits.valid_host(host_header):
                raise replies.BadRequest()
            host, port = split_host(host_header.decode("latin-1"), 80)
            split = (host.lower(), port)
            if len(host_header) <= MAX_CACHED_HOST_BYTES:
                if len(_HOSTS) >= MAX_CACHED_HOSTS:
                    _HOSTS.clear()
                _HOSTS[host_header] = split
        # The scheme is the connection's, as Envoy sets :scheme (redirects, VirtualService `scheme` matches).
        head = RequestHead(method, path, split[0], split[1], headers, "https" if self.secure else "http",
                           self.peer_ip)
        exchange = Exchange(self, head, method, chunked, keep_alive and not self.draining,
                            self.forwarding.runtime.request_clock(), host_header)
        # A request without a body is complete now: a local reply to it need not close the connection.
        exchange.request_complete = not has_body
        self.current = exchange
        if self.active is None:
            self.active = exchange
            if expect_continue:
                self.transport.write(CONTINUE)
            self.forwarding.start(exchange)
        else:
            exchange.expect_continue = expect_continue
            self.queue.append(exchange)
            if len(self.queue) >= MAX_PIPELINED:
                self.pause_reading(PIPELINE)

    def on_chunk_header(self) -> None:
        self.awaiting_chunk = self.progressed = True
        self.trailer_bytes = 0

    def on_chunk_complete(self) -> None:
        self.awaiting_chunk = False
        self.progressed = True

    def on_body(self, body: bytes) -> None:
        self.awaiting_chunk = False
        self.progressed = True
        current = self.current
        if current is not None and not current.done:
            if self.max_body and current.body_size + len(body) > self.max_body:
                # Before forwarding: 413, nothing sent. After (chunked, upstream attached): the upstream
                # connection is closed mid-body, and the client gets 413 unless its answer had started.
                raise replies.PayloadTooLarge()
            current.request_body(body)

    def on_message_complete(self) -> None:
        current = self.current
        if current is not None:
            if current.chunked_request:
                current.request_done()  # the last chunk goes upstream
            elif not current.request_complete:  # a body just ended (a request without one was complete already)
                current.request_complete = True
                self.forwarding.request_body_ended(current)
            if self.write_blocked:
                self.pause_reading(CLIENT_FULL)  # its body is in: no new request while the client is full

    # -- used by Exchange ---------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def exchange_finished(self, exchange: Exchange) -> None:
        if exchange is not self.active:
            return
        self.active = None
        if not exchange.keep_alive or (self.draining and not self.queue):
            self.close()
            return
        # What paused reading for this exchange (its body, its upstream) is over with it.
        if self.paused:
            self.resume_reading(BODY_BUFFER | UPSTREAM_FULL)
        if self.queue:
            nxt = self.active = self.queue.popleft()
            if nxt.expect_continue:
                self.transport.write(CONTINUE)  # the client held its body until we got to this request
            if len(self.queue) < MAX_PIPELINED:
                self.resume_reading(PIPELINE)
            self.forwarding.start(nxt)
        elif self.deferred_error is not None:
            self._reject(self.deferred_error)
        if not self.closed:
            self.timeouts.begin(self.phase())

    def pause_reading(self, reason: int) -> None:
        if not self.closed:
            if not self.paused:
                self.transport.pause_reading()
            self.paused |= reason

    def resume_reading(self, reasons: int) -> None:
        """`reasons` no longer hold; reading goes on once no other reason does."""
        if self.paused & reasons:
            self.paused &= ~reasons
            if not self.paused and not self.closed:
                self.transport.resume_reading()
                active = self.active
                if active is not None and not active.request_complete:
                    self.timeouts.body_read()  # a body's stall clock restarts: the wait was ours

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.timeouts.cancel()
            self.transport.close()
