"""Property tests of the HTTP/1.1 codec, both sides, against the invariants in `codec_oracle`.

Arbitrary client bytes (split anywhere): well-formed responses, unambiguous upstream framing, nothing past
bad bytes forwarded, a rejection closes. Valid pipelined requests (split anywhere): the upstream gets the
same method, target, body and header values. Arbitrary upstream bytes: one well-formed answer or a local
502/503/504. The atheris target (fuzz/codec_target.py) checks the same invariants; its seed corpus is
replayed here so the target's code runs in CI without atheris.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fuzz import codec_target
from mesh.proxy import headers as hdr
from mesh.proxy import response_head
from tests.mesh.proxy import codec_oracle as oracle
from tests.mesh.proxy.codec_oracle import CodecViolation

CORPUS = Path(__file__).resolve().parents[3] / "fuzz" / "corpus" / "codec"
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
cuts = st.lists(st.integers(min_value=0, max_value=400), max_size=6)

# -- arbitrary client bytes -------------------------------------------------------------------------------------
FRAGMENTS = [
    b"GET / HTTP/1.1\r\n", b"POST /books HTTP/1.1\r\n", b"GET http://books:9080/x?q=1 HTTP/1.1\r\n",
    b"HEAD /v2 HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n", b"Host: books:9080\r\n", b"Host: reviews:9080\r\n",
    b"Content-Length: 3\r\n", b"Content-Length: 0\r\n", b"Content-Length: -1\r\n", b"Content-Length: 1, 1\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n", b"Expect: 100-continue\r\n",
    b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"\r\n", b"abc", b"3\r\nabc\r\n", b"0\r\n\r\n",
    b"zz\r\n", b"\n", b"\x00", b"\xff", b" ", b":",
]
client_bytes = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=24)), max_size=14).map(b"".join)


def drive(data: bytes, split: list[int]) -> oracle.Outcome:
    return asyncio.run(oracle.drive_client(data, split))


@FAST
@given(client_bytes, cuts)
@example(b"HEAD /v2 HTTP/1.1\r\nHost: reviews:9080\r\n\r\nGET /v1 HTTP/1.1\r\nHost: books:9080\r\n\r\n", [])
@example(b"POST / HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: books:9080\r\n\r\n", [7, 60])
@example(b"POST / HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
         b"GET /after HTTP/1.1\r\nHost: books:9080\r\n\r\n", [])
@example(b"GET /ws HTTP/1.1\r\nHost: books:9080\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
         b"GET /next HTTP/1.1\r\nHost: books:9080\r\n\r\n", [81])
def test_arbitrary_client_bytes_keep_the_codec_invariants(data, split):
    oracle.check_client_stream(data, drive(data, split))


# -- valid requests ---------------------------------------------------------------------------------------------
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
RESERVED = {b"host", b"content-length", hdr.PEER_HEADER, hdr.REQUEST_ID} | hdr.HOP_BY_HOP
names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,14}", fullmatch=True).filter(
    lambda n: n.lower().encode() not in RESERVED)
values = st.from_regex(r"([!-~]([ -~]{0,20}[!-~])?)?", fullmatch=True)
paths = st.from_regex(r"/[A-Za-z0-9._~!$&'()*+,;=:@/%-]{0,30}(\?[A-Za-z0-9=&%._-]{0,20})?", fullmatch=True)


@st.composite
def valid_requests(draw) -> tuple[str, str, list[tuple[str, str]], bytes | None, list[int] | None]:
    """(method, target, headers, body or None, chunk sizes or None for Content-Length framing)."""
    method = draw(st.sampled_from(METHODS))
    body = None if method == "HEAD" else draw(st.none() | st.binary(max_size=40))
    chunks = None
    if body is not None and draw(st.booleans()):
        chunks = draw(st.lists(st.integers(min_value=1, max_value=16), max_size=4))
    return method, draw(paths), draw(st.lists(st.tuples(names, values), max_size=5)), body, chunks


def encode_request(method: str, target: str, headers, body: bytes | None, chunks: list[int] | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: books:9080"] + [f"{n}: {v}" for n, v in headers]
    if body is None:
        return ("\r\n".join(lines) + "\r\n\r\n").encode()
    if chunks is None:
        return ("\r\n".join(lines + [f"Content-Length: {len(body)}"]) + "\r\n\r\n").encode() + body
    out, rest = [], body
    for size in chunks:
        piece, rest = rest[:size], rest[size:]
        if piece:
            out.append(b"%x\r\n%b\r\n" % (len(piece), piece))
    if rest:
        out.append(b"%x\r\n%b\r\n" % (len(rest), rest))
    head = "\r\n".join(lines + ["Transfer-Encoding: chunked"]) + "\r\n\r\n"
    return head.encode() + b"".join(out) + b"0\r\n\r\n"


@FAST
@given(st.lists(valid_requests(), min_size=1, max_size=4), cuts)
def test_valid_pipelined_requests_arrive_intact_however_split(requests, split):
    data = b"".join(encode_request(*r) for r in requests)
    outcome = drive(data, split)
    oracle.check_client_stream(data, outcome)
    forwarded = outcome.upstream_requests()
    assert len(forwarded) == len(requests)
    for (method, target, headers, body, chunks), got in zip(requests, forwarded):
        assert (got.method, got.url.decode(), got.body, got.complete) == (method, target, body or b"", True)
        for name in {n.lower() for n, _ in headers}:
            sent = [v.encode() for n, v in headers if n.lower() == name]
            assert got.all(name.encode()) == sent, name
        if body is None:
            assert not got.all(b"content-length") and not got.all(b"transfer-encoding")
        elif chunks is None:
            assert (got.all(b"content-length"), got.all(b"transfer-encoding")) == ([b"%d" % len(body)], [])
        else:
            assert (got.all(b"content-length"), got.all(b"transfer-encoding")) == ([], [b"chunked"])
    responses = oracle.split_responses(outcome.client_transport.data, [r[0] == "HEAD" for r in requests])
    assert [(r.status, r.complete) for r in responses] == [(200, True)] * len(requests)
    assert [r.body for r in responses] == [b"" if r[0] == "HEAD" else oracle.OK_BODY for r in requests]
    assert not outcome.client_transport.closed


# -- arbitrary upstream bytes -----------------------------------------------------------------------------------
RESPONSE_FRAGMENTS = [
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 503 Service Unavailable\r\n", b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\n", b"HTTP/1.1 204 No Content\r\n", b"HTTP/1.0 200 OK\r\n",
    b"content-length: 3\r\n", b"content-length: 0\r\n", b"transfer-encoding: chunked\r\n",
    b"connection: close\r\n", b"\r\n", b"abc", b"3\r\nabc\r\n", b"0\r\n\r\n", b"\n", b"\x00",
]
response_bytes = st.lists(st.one_of(st.sampled_from(RESPONSE_FRAGMENTS), st.binary(max_size=16)),
                          max_size=10).map(b"".join)


@FAST
@given(response_bytes, cuts, st.sampled_from(["GET", "HEAD"]), st.booleans())
@example(b"\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n", [], "GET", False)
@example(b"HTTP/1.1 115 X\r\ncontent-length: 10\r\n\r\n: 0\r\n\r\n", [], "GET", False)
@example(b"HTTP/1.1 050 X\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", [], "GET", False)
@example(b"HTTP/1.1 200 OK\r\n\r\nuntil close", [5], "GET", True)
def test_arbitrary_upstream_bytes_give_one_well_formed_answer(response, split, method, reset):
    outcome = asyncio.run(oracle.drive_upstream(response, split, method, reset))
    oracle.check_upstream_stream(response, method, outcome, reset)


def _observed(outcome) -> tuple:
    return (outcome.client_transport.data, outcome.client_transport.closed,
            [up.transport.closed for up in outcome.proxy.upstreams], outcome.proxy.series())


@FAST
@given(response_bytes, cuts, st.sampled_from(["GET", "HEAD"]), st.booleans())
@example(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc", [], "GET", False)
@example(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", [], "GET", False)
def test_an_answer_from_the_parse_memo_is_what_the_parser_answered(response, split, method, reset):
    """The same upstream bytes three times: the first two the parser reads them (and `response_head` remembers
    a plain head seen twice), the third a read that is exactly such a head and its body skips the parser.
    The client, the connections and the metrics must not tell them apart."""
    response_head._parsed.clear()
    response_head._scanned.clear()
    parsed = [_observed(asyncio.run(oracle.drive_upstream(response, split, method, reset))) for _ in range(2)]
    remembered = _observed(asyncio.run(oracle.drive_upstream(response, split, method, reset)))
    assert remembered == parsed[0] == parsed[1]


# -- the oracle can fail ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream, heads", [
    (b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
     [True, False]),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab", [False]),
    (b"HTTP/1.1 200 OK\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", [False]),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", [False]),
], ids=["head-answered-with-a-body", "two-lengths", "status-line-as-header", "bad-chunk"])
def test_oracle_refuses_malformed_response_streams(stream, heads):
    with pytest.raises(CodecViolation):
        oracle.split_responses(stream, heads)


# -- bugs the fuzzer found ---------------------------------------------------------------------------------------
def test_local_reply_to_head_has_no_body_so_the_next_response_stays_in_sync():
    data = b"HEAD /v2 HTTP/1.1\r\nHost: reviews:9080\r\n\r\nGET /v1 HTTP/1.1\r\nHost: books:9080\r\n\r\n"
    outcome = drive(data, [])
    responses = oracle.check_client_stream(data, outcome)
    assert [(r.status, r.body) for r in responses] == [(404, b""), (200, b"ok")]
    assert responses[0].all(b"content-length") == [b"15"]  # what a GET would get, as RFC 9110 allows


@pytest.mark.parametrize("response", [
    b"\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
    b"\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
], ids=["one-empty-line", "two-empty-lines"])
def test_empty_lines_before_the_status_line_are_not_copied_as_a_header(response):
    outcome = asyncio.run(oracle.drive_upstream(response, [], "GET", False))
    [answer] = oracle.check_upstream_stream(response, "GET", outcome, False)
    assert (answer.status, answer.headers[0]) == (201, (b"content-length", b"0"))


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 115 X\r\ncontent-length: 10\r\n\r\n: 0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.1 050 X\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
], ids=["1xx-with-length", "1xx-chunked", "204-with-length", "status-below-100"])
def test_an_upstream_head_that_frames_an_impossible_body_is_a_502(response):
    outcome = asyncio.run(oracle.drive_upstream(response, [], "GET", False))
    [answer] = oracle.check_upstream_stream(response, "GET", outcome, False)
    assert answer.status == 502


@pytest.mark.parametrize("coding", [b"gzip", b"identity", b"c:9080"])
def test_unchunked_transfer_encoding_is_refused_not_forwarded(coding):
    """RFC 9112 6.3: a request whose Transfer-Encoding does not end in chunked has no knowable length."""
    data = (b"POST / HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: " + coding + b"\r\n\r\nabc"
            b"GET /after HTTP/1.1\r\nHost: books:9080\r\n\r\n")
    outcome = drive(data, [])
    [answer] = oracle.check_client_stream(data, outcome)
    assert (answer.status in oracle.REJECT_STATUSES, outcome.client_transport.closed) == (True, True)
    assert outcome.upstream_requests() == []


# -- the atheris target, without atheris -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", sorted(p.name for p in CORPUS.iterdir()))
def test_fuzz_target_passes_its_seed_corpus(seed):
    codec_target.check((CORPUS / seed).read_bytes())


def test_fuzz_input_layout_round_trips():
    data = codec_target.encode(b"GET / HTTP/1.1\r\n", (3, 700), 0xA0)
    assert codec_target.decode(data) == (0xA2, [3, 700], b"GET / HTTP/1.1\r\n")
    assert codec_target.decode(b"") == (0, [], b"")
