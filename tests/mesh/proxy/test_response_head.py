"""Upstream response heads: the client's head built from the raw one, the scan memo, and the parse memo that
lets a known plain answer bypass the parser (checked against the parser's own answer, byte for byte)."""

from __future__ import annotations

import random
import tracemalloc

import httptools
import pytest

from mesh.proxy import headers, response_head
from mesh.proxy import upstream as upstream_mod
from mesh.view import model
from tests.mesh.proxy import fakes
from tests.mesh.proxy.fakes import BOOKS, bookinfo_view, parse_responses, settle, to
from tests.mesh.proxy.test_headers import make_exchange

OPS = model.HeaderOps


def response(exchange, status: int = 200, raw: list[tuple[bytes, bytes]] | None = None) -> bytes:
    head = b"HTTP/1.1 %d Upstream" % status + b"".join(b"\r\n" + n + b": " + v for n, v in raw or [])
    return response_head.downstream_response_head(exchange, status, head)


def test_response_hop_by_hop_and_peer_headers_are_stripped_and_length_kept():
    exchange = make_exchange()
    head = response(exchange, 200, [(b"connection", b"keep-alive"), (b"keep-alive", b"timeout=5"),
                                    (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2"),
                                    (b"proxy-authenticate", b"x"), (b"x-weir-peer", b"p"),
                                    (b"content-length", b"2"), (b"x-app", b"1")])
    assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-app: 1\r\n\r\n"
    assert not exchange.chunked_response


def test_response_without_length_is_chunked_for_http11_and_closed_for_http10():
    chunked = make_exchange()
    assert response(chunked).endswith(b"transfer-encoding: chunked\r\n\r\n") and chunked.chunked_response
    old = make_exchange(http11=False)
    assert response(old).endswith(b"connection: close\r\n\r\n") and not old.keep_alive


@pytest.mark.parametrize("status, method", [(204, "GET"), (304, "GET"), (200, "HEAD")])
def test_bodyless_responses_are_not_chunked(status, method):
    exchange = make_exchange(method=method)
    assert b"transfer-encoding" not in response(exchange, status)
    assert exchange.keep_alive


def test_response_header_ops_at_route_and_destination_level():
    exchange = make_exchange()
    exchange.response_ops = headers.header_plan(OPS(set=(("x-set", "route"),), remove=("x-secret",)),
                                                OPS(add=(("x-added", "dest"),)))
    head = response(exchange, 200, [(b"x-set", b"app"), (b"x-secret", b"s"), (b"x-added", b"app"),
                                    (b"content-length", b"0")])
    (parsed,) = parse_responses(head)
    assert parsed.all("x-set") == ["route"]
    assert parsed.header("x-secret") is None
    assert parsed.all("x-added") == ["app", "dest"]


def test_set_cookie_from_hash_key_is_appended_to_the_response():
    exchange = make_exchange()
    exchange.extra_response_headers = b"set-cookie: user=1\r\n"
    assert b"set-cookie: user=1\r\n" in response(exchange, 200, [(b"content-length", b"0")])


def test_raw_response_head_fast_path_matches_names_exactly_and_in_any_case():
    exchange = make_exchange()
    raw = (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKEEP-ALIVE : timeout=5\r\nTe: trailers\r\n"
           b"Connection-Id: 7\r\nTE-Extra: 1\r\nUpgrade-Insecure-Requests: 1\r\nX-Weir-Peer: spoof\r\n"
           b"Content-Length: 2")
    (parsed,) = parse_responses(response_head.downstream_response_head(exchange, 200, raw) + b"ok")
    names = [name.lower() for name, _ in parsed.headers]
    assert names == ["connection-id", "te-extra", "upgrade-insecure-requests", "content-length"]
    assert parsed.body == b"ok" and not exchange.chunked_response


@pytest.mark.parametrize(("raw", "framed"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3", True),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked", True),
    (b"HTTP/1.1 200 OK\r\nX-Content-Length: 3", False),
    (b"HTTP/1.1 200 OK", False),
])
def test_has_framing(raw, framed):
    assert (response_head.FRAMING_LINE.search(raw) is not None) is framed
    assert response_head.scan_response_head(raw)[2] is framed and response_head.frames_body(raw) is framed
    padded = raw + b"\r\nx-pad: " + b"p" * response_head.MAX_SCANNED_HEAD_BYTES  # past the memo: searched
    assert response_head.frames_body(padded) is framed and padded not in response_head._scanned


def fresh_scan(raw: bytes) -> tuple[bytes, bool, bool]:
    """What scan_response_head must answer, computed without its memo."""
    first = raw.find(b"\r\n")
    rest = response_head._HOP_LINE.sub(b"", raw[first:]) if first >= 0 else b""
    return rest[2:] + b"\r\n" if rest else b"", response_head._LENGTH.search(rest) is not None, response_head.FRAMING_LINE.search(raw) is not None


HEAD_LINES = [b"Content-Length: 3", b"content-length:3", b"Transfer-Encoding: chunked", b"Connection: keep-alive",
              b"CONNECTION : close", b"Keep-Alive: timeout=5", b"Server: nginx", b"X-Content-Length: 9",
              b"Upgrade: h2c", b"ETag: \"a\"", b"Date: Thu, 26 Nov 2026 18:00:00 GMT", b"TE: trailers"]


def test_a_scanned_head_is_remembered_and_every_head_gets_its_own_answer(monkeypatch):
    monkeypatch.setattr(response_head, "_scanned", {})
    rng = random.Random(4)
    heads = [b"\r\n".join([b"HTTP/1.1 200 OK", *rng.sample(HEAD_LINES, rng.randint(0, 5))]) for _ in range(300)]
    heads += [head.swapcase() for head in heads[:50]]  # same names, other case: equal answers, other keys
    for _ in range(2):  # the second round answers from the memo
        assert [response_head.scan_response_head(head) for head in heads] == [fresh_scan(head) for head in heads]
    remembered = response_head._scanned[heads[0]]
    assert response_head.scan_response_head(heads[0]) is remembered


def test_the_memo_is_bounded_in_heads_and_in_head_size(monkeypatch):
    monkeypatch.setattr(response_head, "_scanned", {})
    monkeypatch.setattr(response_head, "MAX_SCANNED_HEADS", 8)
    for i in range(50):
        response_head.scan_response_head(b"HTTP/1.1 200 OK\r\nx-n: %d\r\nConnection: close" % i)
        assert len(response_head._scanned) <= 8
    big = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * response_head.MAX_SCANNED_HEAD_BYTES
    assert response_head.scan_response_head(big) == fresh_scan(big) and big not in response_head._scanned


# -- the parse memo: a known plain answer bypasses the parser ------------------------------------------------

REQUEST = b"GET /books HTTP/1.1\r\nHost: books:9080\r\n\r\n"
HEAD_REQUEST = b"HEAD /books HTTP/1.1\r\nHost: books:9080\r\n\r\n"
PLAIN = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\n\r\nhello"


class CountingParser:
    """An upstream connection's parser, counting the reads fed to it."""

    def __init__(self, parser) -> None:
        self.parser = parser
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += 1
        self.parser.feed_data(data)

    def __getattr__(self, name: str):
        return getattr(self.parser, name)


class NoParser:
    """Stands in for an upstream connection's parser: any use fails the test."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the parser was used ({name})")


@pytest.fixture(autouse=True)
def empty_memos(monkeypatch):
    monkeypatch.setattr(response_head, "_parsed", {})
    monkeypatch.setattr(response_head, "_scanned", {})


async def serve(*reads: bytes, request: bytes = REQUEST, parser_used: bool = True,
                view: model.ProxyView | None = None):
    """One exchange through an outbound listener whose upstream answers in `reads`: (what the client received,
    the stats series, whether the upstream connection was closed)."""
    proxy, client, upstream = await fakes.requested(request, view)
    if not parser_used:
        upstream.protocol.parser = NoParser()
    for data in reads:
        upstream.respond(data)
    return client.transport.data, proxy.series(), upstream.transport.closed


@pytest.mark.parametrize("answer", [
    PLAIN,
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.0 201 Created\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.1 206 Partial Content\r\ncontent-length:3 \r\nKeep-Alive: timeout=5\r\nX-Weir-Peer: spoof\r\n\r\nabc",
], ids=["plain", "close", "http10", "empty-body", "hop-by-hop"])
async def test_a_known_answer_is_answered_without_the_parser_exactly_as_the_parser_did(answer):
    head = answer[:answer.find(b"\r\n\r\n")]
    parsed = await serve(answer)
    assert head not in response_head._parsed  # seen once: an upstream's heads may all differ
    assert await serve(answer) == parsed and head in response_head._parsed
    assert await serve(answer, parser_used=False) == parsed
    client_bytes, series, closed = parsed
    assert client_bytes.startswith(b"HTTP/1.1 2") and client_bytes.endswith(answer[answer.find(b"\r\n\r\n") + 4:])
    assert sum(series.values()) == 1
    assert closed is (b"close" in answer or answer.startswith(b"HTTP/1.0 200"))


async def test_a_known_answer_whose_length_a_route_removes_is_chunked_as_the_parser_would():
    view = bookinfo_view(books_route=to(BOOKS, response_headers=OPS(remove=("content-length",))))
    await serve(PLAIN, view=view)
    parsed = await serve(PLAIN, view=view)
    assert b"transfer-encoding: chunked" in parsed[0] and parsed[0].endswith(b"5\r\nhello\r\n0\r\n\r\n")
    assert await serve(PLAIN, view=view, parser_used=False) == parsed


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 204 No Content\r\nServer: nginx\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
    b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
], ids=["204", "503", "302", "chunked", "until-eof"])
async def test_only_plain_answers_are_remembered(answer):
    await serve(answer)
    await serve(answer)
    assert response_head._parsed == {}


async def test_the_answer_to_a_head_request_is_not_remembered_nor_answered_from_the_memo():
    empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    for _ in range(2):
        await serve(PLAIN[:-5], request=HEAD_REQUEST)  # a HEAD's answer: Content-Length 5, no body
    assert response_head._parsed == {}
    for _ in range(2):
        await serve(empty)  # a GET's answer with a head that a HEAD's answer may also have: remembered...
    proxy, client, upstream = await fakes.requested(HEAD_REQUEST)
    counting = upstream.protocol.parser = CountingParser(upstream.protocol.parser)
    upstream.respond(empty)  # ...and a HEAD's answer still takes the parser, which ends it with its head
    assert counting.fed == 1
    client.send(REQUEST)  # the next request on the same connections: answered once, with its own answer
    await settle()
    upstream.respond(PLAIN)
    assert [(r.first, r.body) for r in parse_responses(client.transport.data)] == [
        ("200", b""), ("200", b"hello")]
    assert sum(proxy.series().values()) == 2 and len(proxy.upstreams) == 1


@pytest.mark.parametrize("reads", [
    (PLAIN[:-2], PLAIN[-2:]),  # the body in two reads
    (PLAIN[:20], PLAIN[20:]),  # the head in two reads
    (b"\r\n" + PLAIN,),  # an empty line before the status line (the parser skips it)
    (PLAIN + b"HTTP/1.1 200 OK\r\n",),  # bytes after the answer: the connection is never reused
    (b"HTTP/1.1 103 Early Hints\r\nConnection: close\r\n\r\n", PLAIN),  # llhttp then refuses any byte: 502
    (b"HTTP/1.1 100 Continue\r\n\r\n", PLAIN),  # after any 1xx the parser reads the answer
], ids=["split-body", "split-head", "leading-crlf", "trailing-bytes", "after-a-closing-1xx", "after-a-1xx"])
async def test_a_read_that_is_not_exactly_a_known_answer_takes_the_parser(reads):
    cold = await serve(*reads)
    await serve(PLAIN)
    await serve(PLAIN)
    assert PLAIN[:PLAIN.find(b"\r\n\r\n")] in response_head._parsed
    assert await serve(*reads) == cold


def remember(head: bytes, status: int = 200, keep_alive: bool = True) -> None:
    """`head` parsed twice, as an upstream connection notes it."""
    for _ in range(2):
        response_head.note_parsed(head, status, keep_alive)
        response_head.scan_response_head(head)


def test_known_response_needs_the_exact_head_and_its_whole_body():
    remember(PLAIN[:PLAIN.find(b"\r\n\r\n")])
    end = PLAIN.find(b"\r\n\r\n")
    assert response_head.known_response(PLAIN) == (PLAIN[:end], 200, True, PLAIN[end + 4:])
    assert response_head.known_response(PLAIN[:-1]) is None
    assert response_head.known_response(PLAIN + b"x") is None
    assert response_head.known_response(PLAIN.replace(b"nginx", b"NGINX")) is None
    assert response_head.known_response(b"\r\n\r\n") is None


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5",  # two lengths (llhttp refuses it anyway)
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5x",
    b"HTTP/1.1 200 OK\r\nX-Content-Length: 5",
])
def test_a_head_whose_length_is_not_one_plain_content_length_is_not_remembered(head):
    remember(head)
    assert response_head._parsed == {}


@pytest.mark.parametrize("length_line", [b"Content-Length: 5", b"content-length:05", b"CONTENT-LENGTH:\t5 \t",
                                         b"Content-Length: 0000000005"])
def test_the_remembered_length_is_the_one_the_parser_reads(length_line):
    head = b"HTTP/1.1 200 OK\r\nServer: x\r\n" + length_line
    read = []

    class Body:
        def on_body(self, body: bytes) -> None:
            read.append(body)

    httptools.HttpResponseParser(Body()).feed_data(head + b"\r\n\r\nhello")
    remember(head)
    assert response_head._parsed[head][2] == len(b"".join(read)) == 5


def test_the_parse_memo_is_bounded_in_heads_and_in_head_size(monkeypatch):
    monkeypatch.setattr(response_head, "MAX_PARSED_HEADS", 8)
    for i in range(50):
        remember(b"HTTP/1.1 200 OK\r\nx-n: %d\r\nContent-Length: 1" % i)
        assert 0 < len(response_head._parsed) <= 8
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nx-big: " + b"a" * response_head.MAX_PARSED_HEAD_BYTES
    remember(big)
    assert big not in response_head._parsed
    assert response_head.known_response(big + b"\r\n\r\nx") is None


async def test_an_upstream_head_that_never_ends_is_a_502_and_is_not_kept_growing():
    proxy, client, upstream = await fakes.requested(REQUEST)
    connection = upstream.protocol
    upstream.respond(b"HTTP/1.1 200 OK\r\nX-Endless: ")
    for _ in range(64):  # 4 MiB in 64 KiB reads
        if upstream.transport.closed:
            break
        upstream.respond(b"a" * 65536)
        assert len(connection.head) <= upstream_mod.MAX_RESPONSE_HEAD_BYTES + 65536
    assert upstream.transport.closed
    (answer,) = client.responses()
    assert answer.first == "502" and ("UPE" in str(proxy.series()))


async def test_a_head_just_under_the_limit_in_many_reads_is_forwarded():
    proxy, client, upstream = await fakes.requested(REQUEST)
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 590) for i in range(100))
    answer = head + b"content-length: 5\r\n\r\nhello"
    assert len(head) < upstream_mod.MAX_RESPONSE_HEAD_BYTES
    for i in range(0, len(answer), 4096):
        upstream.respond(answer[i:i + 4096])
    (response,) = client.responses()
    assert response.first == "200" and response.body == b"hello"


@pytest.mark.parametrize("count, status", [(upstream_mod.MAX_INTERIM_RESPONSES, "200"),
                                           (upstream_mod.MAX_INTERIM_RESPONSES + 1, "502")])
async def test_a_flood_of_1xx_answers_is_a_502(count, status):
    """Each 1xx is dropped, and each copied the rest of its read: thousands in one read were quadratic."""
    received, _, _ = await serve(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n" * count + PLAIN)
    assert parse_responses(received)[0].first == status


def test_a_large_read_is_searched_before_it_is_split_and_a_miss_copies_nothing():
    size = response_head.MAX_PARTITIONED_READ * 4
    head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: %d" % size
    remember(head)
    whole = head + b"\r\n\r\n" + b"x" * size
    assert response_head.known_response(whole) == (head, 200, True, b"x" * size)
    partial = whole[:-1]  # the body's last bytes in the next read
    assert response_head.known_response(partial) is None
    assert response_head.known_response(whole + b"x") is None
    tracemalloc.start()
    try:
        response_head.known_response(partial)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096  # the head's slice, at most: not the body's copy that splitting a miss would make


def _variants():
    """Exchanges that differ in everything the client's head depends on besides the upstream's bytes."""
    closing = make_exchange()
    closing.keep_alive = False
    extra = make_exchange()
    extra.extra_response_headers = b"set-cookie: a=1\r\n"
    return {"plain": make_exchange(), "closing": closing, "extra": extra, "head": make_exchange(method="HEAD"),
            "http10": make_exchange(http11=False)}


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 Upstream\r\ncontent-length: 2\r\nx-app: 1",
    b"HTTP/1.1 204 No Content\r\ncontent-length: 0",
    b"HTTP/1.1 200 Upstream\r\nx-app: 1",  # no length: chunked or closed, never remembered
])
def test_the_remembered_plain_head_is_what_every_exchange_would_get_without_it(raw):
    cold = {}
    for name, exchange in _variants().items():
        response_head._plain_heads.clear()
        cold[name] = response_head.downstream_response_head(exchange, int(raw[9:12]), raw)
    for order in (list(cold), list(reversed(cold))):  # the plain one remembered first, then last
        response_head._plain_heads.clear()
        for name in order:
            exchange = _variants()[name]
            assert response_head.downstream_response_head(exchange, int(raw[9:12]), raw) == cold[name], name
    assert cold["closing"].endswith(b"connection: close\r\n\r\n") and b"set-cookie" in cold["extra"]
