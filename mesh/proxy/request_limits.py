"""What a client's request must be before the proxy forwards it, and how long a client may take to send it.

`read_head` checks a parsed request head (called by `mesh.proxy.downstream` when its headers are complete):
framing (one Transfer-Encoding, exactly `chunked`, and only on HTTP/1.1; Content-Length under the
configured body limit), the request target (origin form, `OPTIONS *`, or absolute `http://` form without
userinfo), the Host (one, and a valid authority), the HTTP version and the expectation. A request that
fails is refused with Envoy's answer (400, 413, 417, 501, 505) and never forwarded; everything else is
normalised by `mesh.proxy.headers` (hop-by-hop headers dropped, chunked bodies re-encoded, trailers and
chunk extensions dropped), so what goes upstream has one framing only. httptools (llhttp, strict mode)
refuses the rest before we see it: CL with TE, duplicate or malformed Content-Length, obs-fold, bad chunk
sizes, whitespace before a colon, bare CR/LF, NUL and control bytes (docs/hostile-http.md has the table).

`ConnectionTimer` is each downstream connection's one timer (slowloris): the request headers must be
complete within `headers_timeout_s` of their first byte (of the accept, for a connection's first request),
a request body may not stall longer than `body_timeout_s`, a keep-alive connection with nothing in flight
is closed after `idle_timeout_s`. The deadline is lazy: phase changes are noted, the timer rarely moves.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httptools

from mesh.proxy import replies

if TYPE_CHECKING:
    from mesh.proxy.downstream import DownstreamConnection

# Headers of a request must be complete this long after their first byte (a new connection: after the
# accept), or 408 and close: a slowloris trickling a header a minute holds a connection 10 s, not forever.
REQUEST_HEADERS_TIMEOUT_S = 10.0
# A request body that stalls this long (no byte while we are reading) is 408: frees a slow-body client's
# slot; time the proxy itself is not reading (flow control) does not count.
REQUEST_BODY_TIMEOUT_S = 30.0
# A keep-alive connection with no request in flight is closed after this long (Envoy's idle_timeout is 1 h;
# idle sockets are what a flood leaves). Twice the upstream pools' 60 s (mesh.proxy.pool.IDLE_TIMEOUT_S):
# a peer sidecar's pool gives a connection up before we close it under a request it is sending.
IDLE_TIMEOUT_S = 120.0
# No request body limit by default (Envoy sets none for a streamed body either).
MAX_REQUEST_BODY_BYTES = 0

# Connection phases (ConnectionTimer.phase).
IDLE, HEADERS, BODY, BUSY = 0, 1, 2, 3
_NEVER = float("inf")

# RFC 3986 authority as a Host carries it: a reg-name or IPv4 (unreserved, pct-encoded, sub-delims) or an
# IP literal, then an optional port. No userinfo, path, whitespace or control bytes.
# Connection options that name no header; any other token names a hop-by-hop header, dropped before
# forwarding (RFC 9110 §7.6.1), except the ones framing and routing rest on: nominating those is refused.
_CONNECTION_OPTIONS = frozenset({b"", b"close", b"keep-alive", b"upgrade"})
_NEVER_NOMINATED = frozenset({b"host", b"content-length", b"transfer-encoding"})
# The Connection values nearly every client sends, which nominate nothing: no token split per request.
_PLAIN_CONNECTION = frozenset({b"close", b"keep-alive", b"Close", b"Keep-Alive"})
_AUTHORITY = re.compile(rb"(?:[A-Za-z0-9\-._~%!$&'()*+,;=]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?")


class Limits:
    """The proxy's request limits and downstream timeouts (flags of `python -m mesh.proxy`); 0 = off."""

    __slots__ = ("headers_timeout_s", "body_timeout_s", "idle_timeout_s", "max_body_bytes")

    def __init__(self, headers_timeout_s: float = REQUEST_HEADERS_TIMEOUT_S,
                 body_timeout_s: float = REQUEST_BODY_TIMEOUT_S, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 max_body_bytes: int = MAX_REQUEST_BODY_BYTES) -> None:
        self.headers_timeout_s = headers_timeout_s
        self.body_timeout_s = body_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_body_bytes = max_body_bytes

    def __repr__(self) -> str:
        return (f"<Limits headers={self.headers_timeout_s}s body={self.body_timeout_s}s "
                f"idle={self.idle_timeout_s}s max_body={self.max_body_bytes or 'off'}>")


def valid_host(value: bytes) -> bool:
    return _AUTHORITY.fullmatch(value) is not None


# Headers whose value sets llhttp's keep-alive flags (it reads Proxy-Connection as Connection).
_CONNECTION_HEADERS = frozenset({b"connection", b"proxy-connection"})


def http_version(parser, keep_alive: bool, headers: list[tuple[bytes, bytes]]) -> str:
    """The request's HTTP version ("1.1", "1.0", "0.9" or "2.0": all llhttp accepts), as `get_http_version`
    says it, which builds it with a `str.format` (about 2 % of a proxied request's instructions). llhttp keeps
    a request alive by default only for 1.1; other versions only with `Connection: keep-alive` (or Proxy-): so
    a kept-alive request with neither header is 1.1, and nearly every request is answered without the call.
    This rests on llhttp's strict mode, which refuses other versions (with `lenient_version`, a 1.2 request
    would keep alive and be taken for 1.1): httptools sets no leniency."""
    if keep_alive:
        for name, _ in headers:
            if name in _CONNECTION_HEADERS:
                return parser.get_http_version()
        return "1.1"
    return parser.get_http_version()


# The headers `read_head` reads.
_HEAD_FIELDS = frozenset({b"host", b"transfer-encoding", b"content-length", b"expect", b"connection"})


def read_head(method: str, version: str, url: bytes, headers: list[tuple[bytes, bytes]],
              max_body: int) -> tuple[bytes, str, bool, bool, bool]:
    """(Host, path, chunked, has a body, expects 100-continue) of a request head, or a ProxyError."""
    if version != "1.1" and version != "1.0":
        raise replies.VersionNotSupported() if version > "1.1" else replies.BadRequest()  # HTTP/0.9: 400
    if method == "CONNECT":
        raise replies.MethodNotImplemented()  # no tunnels: Weir proxies HTTP only
    host = transfer = length = expect = connection = None
    for name, value in headers:
        if name not in _HEAD_FIELDS:  # one set lookup for the other headers, not five comparisons
            continue
        if name == b"host":
            if host is not None:
                raise replies.BadRequest()  # RFC 9112 §3.2: more than one Host
            host = value
        elif name == b"transfer-encoding":
            transfer = value if transfer is None else transfer + b"," + value
        elif name == b"content-length":
            length = value  # one, digits only: llhttp refuses the rest
        elif name == b"expect":
            expect = value
        elif name == b"connection":
            connection = value if connection is None else connection + b"," + value
    if connection is not None and connection not in _PLAIN_CONNECTION:
        _drop_nominated(connection, headers)
    chunked, has_body = _framing(version, transfer, length, max_body)
    expect_continue = False
    if expect is not None:
        if expect.strip().lower() != b"100-continue":
            raise replies.ExpectationFailed()
        expect_continue = version == "1.1"  # RFC 9110 §10.1.1: ignored from an HTTP/1.0 client
    if url[:1] == b"/":  # origin form, nearly every request: in line
        # partition, not `in`: CPython 3.11's bytes `in` first tries the operand as an int and raises, ~2,000
        # instructions per request; nor `find`, whose arguments are parsed as a tuple, ~350.
        if url.partition(b"#")[1]:
            raise replies.BadRequest()  # a fragment is never sent (Envoy refuses it too)
        authority, path = None, url.decode("latin-1")
    else:
        authority, path = _target(method, url)
    if authority is not None:
        host = authority
    elif not host:
        if version == "1.1":
            raise replies.BadRequest()  # RFC 9112 §3.2: a 1.1 request without Host
        host = b""
    return host, path, chunked, has_body, expect_continue


def _framing(version: str, transfer: bytes | None, length: bytes | None, max_body: int) -> tuple[bool, bool]:
    """(chunked, has a body)."""
    if transfer is not None:
        if version == "1.0":
            raise replies.BadRequest()  # RFC 9112 §6.1: Transfer-Encoding in 1.0 is faulty framing
        if transfer.strip().lower() != b"chunked":
            raise replies.TransferEncodingNotImplemented()  # Envoy: 501 for any other coding
        return True, True
    if length is not None:
        size = int(length)
        if max_body and size > max_body:
            raise replies.PayloadTooLarge()
        return False, size > 0
    return False, False


def _target(method: str, url: bytes) -> tuple[bytes | None, str]:
    """(the authority of an absolute-form target, or None; the origin-form path) of a target that is not in
    origin form (`read_head` reads that one)."""
    if url == b"*":
        if method != "OPTIONS":
            raise replies.BadRequest()
        return None, "*"
    if url[:7].lower() != b"http://":
        raise replies.BadRequest()  # authority form without CONNECT, https:// (use CONNECT), garbage
    # Absolute form: the app uses us as its HTTP_PROXY; the URL's authority is the destination.
    parsed = httptools.parse_url(url)
    if parsed.userinfo or not parsed.host or parsed.fragment:
        raise replies.BadRequest()
    host = parsed.host if b":" not in parsed.host else b"[" + parsed.host + b"]"  # IPv6: bracketed again
    if parsed.port:
        host += b":%d" % parsed.port
    path = (parsed.path or b"/").decode("latin-1")
    if parsed.query:
        path += "?" + parsed.query.decode("latin-1")
    return host, path


def _drop_nominated(connection: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    nominated = {token.strip().lower() for token in connection.split(b",")} - _CONNECTION_OPTIONS
    if nominated:
        if not nominated.isdisjoint(_NEVER_NOMINATED):
            raise replies.BadRequest()  # `Connection: content-length` would unframe the body upstream
        headers[:] = [(name, value) for name, value in headers if name not in nominated]


class ConnectionTimer:
    """One long-lived timer per downstream connection, with a lazy deadline: a phase change only notes the
    phase and the time it began (plain stores; a keep-alive request does no timer work), and the timer is
    moved only when a new deadline is earlier than the one it is set for, which a request whose head comes
    in one read never has. When it fires it recomputes: acts if the phase's deadline has passed, else sleeps
    for what is left. A connection busy with an answer has no deadline: its timer is not re-armed until the
    exchange finishes. Reads of a body only restamp `since`."""

    __slots__ = ("conn", "loop", "handle", "due", "phase", "since", "timeouts")

    def __init__(self, conn: DownstreamConnection, limits: Limits, loop) -> None:
        self.conn = conn
        self.loop = loop  # asyncio's loop, or tests' fake network
        self.handle = None
        self.due = _NEVER  # when `handle` fires
        self.phase = -1  # the phase `since` belongs to (a request in flight is BUSY without being noted)
        self.since = 0.0
        # Indexed by phase; 0 = off.
        self.timeouts = (limits.idle_timeout_s, limits.headers_timeout_s, limits.body_timeout_s, 0.0)

    def start(self) -> None:
        """A new connection: its first request's headers are due `headers_timeout_s` after the accept."""
        self.begin(HEADERS)

    def begin(self, phase: int) -> None:
        """The connection entered `phase` now."""
        self.phase = phase
        timeout = self.timeouts[phase]
        if timeout:
            now = self.since = self.loop.time()
            if now + timeout < self.due:
                self._arm(now, now + timeout)

    def body_read(self) -> None:
        """Bytes of the active request's body arrived (or we resumed reading it): its stall clock restarts."""
        if self.phase != BODY:
            self.begin(BODY)
        elif self.timeouts[BODY]:
            self.since = self.loop.time()

    def _arm(self, now: float, due: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.due = due
        self.handle = self.loop.call_later(due - now, self._fire)

    def _fire(self) -> None:
        self.handle = None
        self.due = _NEVER
        conn = self.conn
        phase = self.phase
        if conn is None or conn.closed or phase == BUSY:
            return
        active = conn.active
        if active is not None and active.request_complete:
            self.phase = BUSY  # an answer is on its way; `exchange_finished` begins the next phase
            return
        now = self.loop.time()
        if phase == BODY and conn.paused:  # we stopped reading (flow control): the client is not the slow one
            self.since = now
        timeout = self.timeouts[phase]
        if not timeout:
            return
        due = self.since + timeout
        if due > now:
            self._arm(now, due)
        else:
            conn.timed_out(phase)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.due = _NEVER
        self.phase = -1

    def close(self) -> None:
        """The connection is gone: no deadline, and no reference back to it (see `DownstreamConnection.released`)."""
        self.cancel()
        self.conn = None
