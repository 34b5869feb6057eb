"""The HTTP/1.1 codec's invariants, checked from the outside: what a client and an upstream see of the proxy.

Shared by the Hypothesis properties (tests/mesh/proxy/test_codec_properties.py) and the atheris target
(fuzz/codec_target.py). `drive_client` feeds bytes, split where the caller says, into one downstream
connection over mock transports (tests/mesh/proxy/fakes.py), answers every complete request that reaches an
upstream, and honours flow control (no bytes are delivered while the proxy has paused reading, none after
it closed). `check_client_stream` then compares both ends against a reference: httptools (the proxy's own
parser) run once over the whole input, which fixes where each request starts and where the input turns bad.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httptools

from tests.mesh.proxy.fakes import FakeNetwork, FakeTransport, Proxy, Upstream, bookinfo_view

# What every upstream answers a request with (a HEAD gets the head only).
OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
OK_BODY = b"ok"
# Statuses the downstream codec rejects a malformed request with; the connection must close after them.
REJECT_STATUSES = frozenset({400, 408, 413, 414, 417, 431, 501, 505})
BODYLESS_STATUSES = frozenset({204, 304})
# Bounds the drive loop: each round either delivers a piece, answers an upstream, or stops.
MAX_ROUNDS = 200


class CodecViolation(AssertionError):
    """An invariant of the codec does not hold (the message says which and shows the bytes)."""


# -- the recording network -------------------------------------------------------------------------------------
class LoggedTransport(FakeTransport):
    """A mock upstream transport that numbers its writes in one sequence shared by all upstreams."""

    def __init__(self, peer: tuple[str, int], log: list) -> None:
        super().__init__(peer)
        self.log = log
        self.seqs: list[int] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.seqs.append(len(self.log))
        self.log.append(self)


class LoggedNetwork(FakeNetwork):
    def __init__(self) -> None:
        super().__init__()
        self.log: list[LoggedTransport] = []

    async def create_connection(self, factory, address: str, port: int):
        protocol = factory()
        transport = LoggedTransport((address, port), self.log)
        protocol.connection_made(transport)
        self.upstreams.append(Upstream(address, port, protocol, transport))
        return transport, protocol


def logged_proxy(seed: int = 7) -> Proxy:
    proxy = Proxy(bookinfo_view(), seed=seed)
    net = LoggedNetwork()
    proxy.net = net
    proxy.forwarding.loop = net
    proxy.runtime.request_clock = net.time
    return proxy


# -- parsing what crossed the proxy ----------------------------------------------------------------------------
@dataclass
class Request:
    method: str = ""
    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    head_complete: bool = False
    complete: bool = False
    seq: int = 0  # upstream side: number of the write that carried its first byte (global order)

    def all(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]


class _RequestCollector:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.parser = httptools.HttpRequestParser(self)
        self.seq = 0
        self.error: Exception | None = None

    def on_message_begin(self) -> None:
        self.requests.append(Request(seq=self.seq))

    def on_url(self, url: bytes) -> None:
        self.requests[-1].url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.requests[-1].headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.requests[-1].method = self.parser.get_method().decode("latin-1")
        self.requests[-1].head_complete = True

    def on_body(self, body: bytes) -> None:
        self.requests[-1].body += body

    def on_message_complete(self) -> None:
        self.requests[-1].complete = True

    def feed(self, data: bytes) -> None:
        while self.error is None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                # The proxy does not tunnel: an Upgrade request goes on as plain HTTP, and the bytes after it
                # are the next request (mesh.proxy.downstream does the same).
                offset = exc.args[0]
                if offset < len(data):
                    data = data[offset:]
                    continue
            except httptools.HttpParserError as exc:
                self.error = exc
            break


def reference_requests(data: bytes) -> tuple[list[Request], Exception | None]:
    """The requests httptools finds in `data` (the last may be partial) and the error it stopped at."""
    collector = _RequestCollector()
    collector.feed(data)
    return collector.requests, collector.error


def upstream_requests(transport: LoggedTransport) -> list[Request]:
    """What one upstream connection received; it must parse cleanly, write by write."""
    collector = _RequestCollector()
    for data, seq in zip(transport.writes, transport.seqs):
        collector.seq = seq
        collector.feed(data)
    if collector.error is not None:
        raise CodecViolation(f"upstream received a malformed request stream ({collector.error!r}): "
                             f"{transport.data!r}")
    return collector.requests


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    complete: bool

    def all(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]


def _read_chunked(data: bytes, at: int) -> int | None:
    """End offset of a chunked body starting at `at`, None when truncated."""
    while True:
        eol = data.find(b"\r\n", at)
        if eol < 0:
            return None
        size_text = data[at:eol].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise CodecViolation(f"bad chunk size {size_text!r} in {data!r}") from exc
        at = eol + 2
        if size == 0:
            end = data.find(b"\r\n\r\n", at - 2)
            return None if end < 0 else end + 4
        if len(data) < at + size + 2:
            return None
        if data[at + size:at + size + 2] != b"\r\n":
            raise CodecViolation(f"chunk not followed by CRLF in {data!r}")
        at += size + 2


def split_responses(data: bytes, head_requests: list[bool]) -> list[Response]:
    """Cut a client's byte stream into responses: response i answers a HEAD when head_requests[i].

    Each response's framing is checked (HTTP/1.1 status line, at most one Content-Length, never with
    Transfer-Encoding) and its bytes re-parsed by httptools on their own; a truncated last response is
    returned with complete=False (legal only when the proxy closed the connection)."""
    out: list[Response] = []
    at = 0
    while at < len(data):
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            out.append(Response(0, [], b"", False))
            return out
        head = data[at:end + 4]
        if not head.startswith(b"HTTP/1.1 ") or len(head) < 12 or not head[9:12].isdigit():
            raise CodecViolation(f"not an HTTP/1.1 status line at offset {at}: {data!r}")
        status = int(head[9:12])
        headers = []
        for line in head[:-4].split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep or name != name.strip() or not name:
                raise CodecViolation(f"malformed header line {line!r} in {data!r}")
            headers.append((name.lower(), value.strip()))
        lengths = [v for k, v in headers if k == b"content-length"]
        chunked = [v for k, v in headers if k == b"transfer-encoding"]
        if len(lengths) > 1 or (lengths and chunked):
            raise CodecViolation(f"ambiguous response framing {headers!r} in {data!r}")
        start = end + 4
        if status < 200:  # interim (100 Continue): no body, and the final response still follows
            if status != 100 or headers:
                raise CodecViolation(f"unexpected interim response {head!r}")
            at = start
            continue
        index = len(out)
        # The downstream codec's rejection carries its body even to a HEAD; harmless, the connection closes.
        rejection = status in REJECT_STATUSES and (b"connection", b"close") in headers
        bodyless = (index < len(head_requests) and head_requests[index] and not rejection
                    ) or status in BODYLESS_STATUSES
        if bodyless:
            stop: int | None = start
        elif chunked:
            if chunked != [b"chunked"]:
                raise CodecViolation(f"unexpected transfer-encoding {chunked!r}")
            stop = _read_chunked(data, start)
        elif lengths:
            stop = start + int(lengths[0])
            stop = stop if stop <= len(data) else None
        else:
            stop = None  # delimited by close: the rest of the stream
        if stop is None:
            out.append(Response(status, headers, data[start:], False))
            return out
        message = data[at:stop]
        _reparse_response(message, bodyless)
        body = data[start:stop] if not chunked else b""
        out.append(Response(status, headers, body, True))
        at = stop
    return out


class _ResponseCheck:
    def __init__(self) -> None:
        self.complete = False
        self.body = b""

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def _reparse_response(message: bytes, bodyless: bool) -> None:
    if bodyless:
        return  # httptools cannot be told the request was HEAD; the head was checked line by line
    check = _ResponseCheck()
    try:
        httptools.HttpResponseParser(check).feed_data(message)
    except httptools.HttpParserError as exc:
        raise CodecViolation(f"httptools refuses a response the proxy wrote ({exc!r}): {message!r}") from exc
    if not check.complete:
        raise CodecViolation(f"response not complete by its own framing: {message!r}")


# -- driving one connection ------------------------------------------------------------------------------------
def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


async def _settle(rounds: int = 3) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


@dataclass
class Outcome:
    proxy: Proxy
    client_transport: FakeTransport
    delivered: int  # bytes of the input the proxy was given (the rest: paused or closed)
    stalled: bool  # input left undelivered on an open connection whose reading stays paused

    def upstream_requests(self) -> list[Request]:
        """Every request that reached any upstream, in the order the proxy sent them."""
        found = [r for up in self.proxy.upstreams for r in upstream_requests(up.transport)]
        return sorted(found, key=lambda r: r.seq)


def _answer(upstreams, answered: dict[int, int], response_for) -> bool:
    progressed = False
    for index, up in enumerate(upstreams):
        if up.transport.closed or up.protocol.exchange is None:
            continue
        requests = upstream_requests(up.transport)
        done = answered.get(index, 0)
        if done < len(requests) and requests[done].complete:
            answered[index] = done + 1
            up.respond(response_for(requests[done]))
            progressed = True
    return progressed


def ok_response(request: Request) -> bytes:
    return OK_HEAD if request.method == "HEAD" else OK_HEAD + OK_BODY


async def drive_client(data: bytes, cuts: list[int], response_for=ok_response, proxy: Proxy | None = None
                       ) -> Outcome:
    proxy = proxy or logged_proxy()
    client = proxy.client()
    transport = client.transport
    queue = pieces(data, cuts)
    delivered = 0
    answered: dict[int, int] = {}
    for _ in range(MAX_ROUNDS):
        progressed = False
        if queue and transport.reading and not transport.closed:
            piece = queue.pop(0)
            client.send(piece)
            delivered += len(piece)
            progressed = True
        await _settle()
        progressed = _answer(proxy.upstreams, answered, response_for) or progressed
        if progressed:
            await _settle()
        elif not queue or transport.closed or not transport.reading:
            break
    return Outcome(proxy, transport, delivered, bool(queue) and not transport.closed)


# -- the invariants ------------------------------------------------------------------------------------------
def check_framing(request: Request) -> None:
    lengths = request.all(b"content-length")
    if len(lengths) > 1 or (lengths and request.all(b"transfer-encoding")):
        raise CodecViolation(f"ambiguous upstream framing: {request.headers!r}")


def _origin_form(url: bytes) -> bytes:
    """The request target as the proxy forwards it: absolute form (proxy requests) becomes path?query."""
    if url[:7].lower() != b"http://":
        return url
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        return url
    return (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")


def check_client_stream(data: bytes, outcome: Outcome) -> list[Response]:
    """(a) responses well-formed, (b) forwarded requests well-framed and taken from the input, (c) a
    rejected connection closes and nothing after the bad bytes goes upstream, (d) no more answers than
    requests (+1 for the rejection)."""
    reference, error = reference_requests(data)
    heads = [r for r in reference if r.head_complete]
    forwarded = outcome.upstream_requests()
    closed = outcome.client_transport.closed
    responses = split_responses(outcome.client_transport.data, [r.method == "HEAD" for r in heads])
    for request in forwarded:
        check_framing(request)
    # (b)/(c): each forwarded request is one the reference parser saw completely headed, in order, and its
    # body is a prefix of that request's body (all of it, when the upstream saw it complete).
    if len(forwarded) > len(heads):
        raise CodecViolation(f"{len(forwarded)} requests forwarded, the input holds {len(heads)}: {data!r}")
    position = 0
    for request in forwarded:
        while position < len(heads) and (heads[position].method, _origin_form(heads[position].url)) != (
                request.method, request.url):
            position += 1  # answered locally (no route, ...), or refused
        if position == len(heads):
            raise CodecViolation(f"forwarded {request.method} {request.url!r} is not in the input, in order: "
                                 f"{data!r}")
        source = heads[position]
        position += 1
        if not source.body.startswith(request.body) or (request.complete and request.body != source.body):
            raise CodecViolation(f"forwarded body {request.body!r} is not the input's {source.body!r}")
        if request.complete and not source.complete:
            raise CodecViolation(f"upstream saw a complete request the client never finished: {data!r}")
    # (a) is checked by split_responses; a truncated response only with the connection closed.
    if responses and not responses[-1].complete and not closed:
        raise CodecViolation(f"truncated response on an open connection: {outcome.client_transport.data!r}")
    # (d)
    if len(responses) > len(heads) + 1:
        raise CodecViolation(f"{len(responses)} responses to {len(heads)} requests")
    # (c): a rejection is the last thing said, on a closed connection.
    for index, response in enumerate(responses):
        if response.status in REJECT_STATUSES and response.all(b"server") == [b"weir"]:
            if index != len(responses) - 1 or not closed:
                raise CodecViolation(f"rejection {response.status} not final / connection left open: "
                                     f"{outcome.client_transport.data!r}")
    if outcome.stalled:
        raise CodecViolation(f"reading stays paused with nothing in flight: {data!r}")
    if error is not None and not closed:
        raise CodecViolation(f"malformed input {data!r} ({error!r}) left the connection open")
    return responses


# -- the response side ---------------------------------------------------------------------------------------
# Replies the proxy may give instead of the upstream's answer: protocol error, reset, retries exhausted.
LOCAL_UPSTREAM_FAILURES = frozenset({502, 503, 504})
# A first try and the route's default retries (2), with room to spare.
MAX_TRIES = 4


async def drive_upstream(response: bytes, cuts: list[int], method: str = "GET", reset: bool = False,
                         proxy: Proxy | None = None) -> Outcome:
    """One request from the client; every try of it is answered with `response`, split at `cuts`, and the
    upstream connection is reset afterwards when `reset`. Retry backoff runs on the fake clock."""
    proxy = proxy or logged_proxy()
    client = proxy.client()
    client.send(b"%s /x HTTP/1.1\r\nhost: books:9080\r\n\r\n" % method.encode())
    await _settle()
    answered: dict[int, int] = {}
    for _ in range(MAX_TRIES):
        waiting = [(i, up) for i, up in enumerate(proxy.upstreams)
                   if not up.transport.closed and up.protocol.exchange is not None
                   and answered.get(i, 0) < len(upstream_requests(up.transport))]
        if not waiting:
            proxy.net.advance(1.0)  # a retry's backoff timer
            await _settle()
            continue
        index, up = waiting[0]
        answered[index] = answered.get(index, 0) + 1
        for piece in pieces(response, cuts):
            if up.transport.closed:
                break
            up.respond(piece)
            await _settle()
        if reset and not up.transport.closed:
            up.reset()
            await _settle()
    return Outcome(proxy, client.transport, 0, False)


def reference_statuses(response: bytes) -> set[int]:
    """Final statuses httptools reads at the start of `response` (empty when it reads none)."""
    statuses: set[int] = set()

    class Heads:
        def on_headers_complete(self) -> None:
            statuses.add(parser.get_status_code())

    parser = httptools.HttpResponseParser(Heads())
    try:
        parser.feed_data(response)
    except httptools.HttpParserError:
        pass
    return {s for s in statuses if s >= 200}


def check_upstream_stream(response: bytes, method: str, outcome: Outcome, reset: bool) -> list[Response]:
    """The client gets at most one well-formed answer: the upstream's status, or a local 502/503/504; a
    truncated one only on a closed connection or while the upstream still sends it; after a reset, an
    answer or a close, never silence."""
    data = outcome.client_transport.data
    closed = outcome.client_transport.closed
    responses = split_responses(data, [method == "HEAD"])
    if len(responses) > 1:
        raise CodecViolation(f"{len(responses)} responses to one request: {data!r}")
    for request in outcome.upstream_requests():
        check_framing(request)
    if not responses:
        if reset and not closed:
            raise CodecViolation(f"upstream reset, the client got nothing: upstream sent {response!r}")
        return responses
    answer = responses[0]
    streaming = not reset and any(up.protocol.exchange is not None for up in outcome.proxy.upstreams)
    if not answer.complete and not closed and not streaming:
        raise CodecViolation(f"truncated response on an open connection: {data!r}")
    if answer.complete and answer.status not in reference_statuses(response) | LOCAL_UPSTREAM_FAILURES:
        raise CodecViolation(f"client got {answer.status}, upstream sent {response!r}")
    if answer.complete and answer.status < 200:
        raise CodecViolation(f"interim response forwarded: {data!r}")
    return responses
