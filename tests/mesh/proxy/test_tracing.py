"""Trace context in and out of the proxy (mesh.proxy.tracing): W3C traceparent, B3 single and B3 multi
extraction with their invalid forms, precedence between them, new roots sampled with a seeded rng, and the
headers sent upstream (exact bytes, and a Hypothesis round trip back through `extract`)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.proxy import tracing
from mesh.proxy.tracing import TraceContext
from tests.mesh.proxy.implementations import implementation  # noqa: F401  (autouse: both run)

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"
T64 = "a3ce929d0e0e4736"
OTHER_T = "0af7651916cd43dd8448eb211c80319c"
OTHER_S = "b7ad6b7169203331"


def h(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]


def parse(lines: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in lines.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            out.append((name, value))
    return out


# -- W3C traceparent ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (f"00-{T}-{S}-01", TraceContext(T, S, True)),
    (f"00-{T}-{S}-00", TraceContext(T, S, False)),
    (f"00-{T}-{S}-03", TraceContext(T, S, True)),  # other flag bits beside "sampled" are ignored
    (f"00-{T}-{S}-02", TraceContext(T, S, False)),
    (f"  00-{T}-{S}-01  ", TraceContext(T, S, True)),
])
def test_traceparent_valid(value, expected):
    assert tracing.extract(h(traceparent=value)) == expected


@pytest.mark.parametrize("value", [
    f"ff-{T}-{S}-01",  # version ff is forbidden
    f"01-{T}-{S}-01",  # only version 00 is understood
    f"00-{T[:-1]}-{S}-01",  # trace id of 31 digits
    f"00-{T}0-{S}-01",  # 33
    f"00-{T}-{S[:-1]}-01",  # span id of 15
    f"00-{T}-{S}0-01",  # 17
    f"00-{T}-{S}-1",  # flags of one digit
    f"00-{T}-{S}-001",
    f"00-{T}-{S}-0g",
    f"00-{T[:-1]}g-{S}-01",  # non-hex trace id
    f"00-{T}-{S[:-1]}z-01",  # non-hex span id
    f"00-{'0' * 32}-{S}-01",  # all-zero trace id
    f"00-{T}-{'0' * 16}-01",  # all-zero span id
    f"00-{T}-{S}",  # three fields
    "",
    "garbage",
])
def test_traceparent_invalid_is_ignored(value):
    assert tracing.extract(h(traceparent=value)) is None


# -- B3 single header ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (f"{T}-{S}-1", TraceContext(T, S, True)),
    (f"{T}-{S}-0", TraceContext(T, S, False)),
    (f"{T}-{S}-d", TraceContext(T, S, True)),  # debug implies sampled
    (f"{T}-{S}", TraceContext(T, S, True)),  # no decision: sampled
    (f"{T}-{S}-1-{OTHER_S}", TraceContext(T, S, True)),  # the caller's parent is not this hop's business
    (f"{T64}-{S}-1", TraceContext("0" * 16 + T64, S, True)),  # 64-bit trace id padded to 128 bits
    (f"{T.upper()}-{S.upper()}-1", TraceContext(T, S, True)),
])
def test_b3_single_valid(value, expected):
    assert tracing.extract(h(b3=value)) == expected


@pytest.mark.parametrize("value", [
    f"{T[:-1]}-{S}-1",  # 31 digits
    f"{T64[:-1]}-{S}-1",  # 15 digits: neither 64 nor 128 bits
    f"{T}-{S[:-1]}-1",
    f"{T[:-1]}x-{S}-1",
    f"{T}-{S[:-1]}x-1",
    f"{'0' * 32}-{S}-1",
    f"{'0' * 16}-{S}-1",  # an all-zero 64-bit trace id stays zero once padded
    "",
])
def test_b3_single_invalid_is_ignored(value):
    assert tracing.extract(h(b3=value)) is None


@pytest.mark.parametrize(("headers", "sampled"), [
    ({"b3": "0"}, False), ({"b3": "1"}, True), ({"b3": "d"}, True),
    ({"x_b3_sampled": "0"}, False), ({"x_b3_sampled": "1"}, True),
])
def test_a_sampling_decision_without_ids_is_a_context_without_a_trace(headers, sampled):
    assert tracing.extract(h(**headers)) == TraceContext("", "", sampled)


# -- B3 multiple headers --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "expected_sampled"), [
    ({}, True),  # no x-b3-sampled: sampled
    ({"x_b3_sampled": "1"}, True),
    ({"x_b3_sampled": "true"}, True),
    ({"x_b3_sampled": "0"}, False),
    ({"x_b3_sampled": "false"}, False),
    ({"x_b3_sampled": "0", "x_b3_flags": "1"}, True),  # debug overrides the decision
    ({"x_b3_flags": "0", "x_b3_sampled": "0"}, False),
])
def test_b3_multi_sampling(extra, expected_sampled):
    ctx = tracing.extract(h(x_b3_traceid=T, x_b3_spanid=S, **extra))
    assert ctx == TraceContext(T, S, expected_sampled)


def test_b3_multi_64_bit_trace_id_is_padded_and_the_callers_parent_is_not_kept():
    ctx = tracing.extract(h(x_b3_traceid=T64, x_b3_spanid=S, x_b3_parentspanid=OTHER_S))
    assert ctx == TraceContext("0" * 16 + T64, S, True)


@pytest.mark.parametrize("headers", [
    {"x_b3_traceid": T},  # no span id
    {"x_b3_spanid": S},  # no trace id
    {"x_b3_traceid": T[:-1], "x_b3_spanid": S},
    {"x_b3_traceid": T, "x_b3_spanid": S + "0"},
    {"x_b3_traceid": T[:-1] + "q", "x_b3_spanid": S},
    {"x_b3_traceid": "0" * 32, "x_b3_spanid": S},
    {"x_b3_traceid": "0" * 16, "x_b3_spanid": S},
])
def test_b3_multi_invalid_is_ignored(headers):
    assert tracing.extract(h(**headers)) is None


@pytest.mark.parametrize("headers", [{"b3": f"{T}-{'0' * 16}-1"}, {"x_b3_traceid": T, "x_b3_spanid": "0" * 16}])
def test_b3_all_zero_span_id_is_refused(headers):
    assert tracing.extract(h(**headers)) is None


def test_no_trace_headers_and_unrelated_headers():
    assert tracing.extract([]) is None
    assert tracing.extract([(b"host", b"books"), (b"tracestate", b"vendor=x")]) is None


# -- precedence ------------------------------------------------------------------------------------------------

def test_traceparent_wins_over_b3_which_wins_over_b3_multi():
    multi = {"x_b3_traceid": OTHER_T, "x_b3_spanid": OTHER_S, "x_b3_sampled": "0"}
    b3 = f"{T64 * 2}-{OTHER_S}-0"
    assert tracing.extract(h(traceparent=f"00-{T}-{S}-01", b3=b3, **multi)) == TraceContext(T, S, True)
    assert tracing.extract(h(b3=b3, **multi)) == TraceContext(T64 * 2, OTHER_S, False)
    assert tracing.extract(h(**multi)) == TraceContext(OTHER_T, OTHER_S, False)


def test_an_invalid_format_falls_through_to_the_next():
    multi = {"x_b3_traceid": OTHER_T, "x_b3_spanid": OTHER_S}
    assert tracing.extract(h(traceparent="ff-bad", b3=f"{T}-{S}-0", **multi)) == TraceContext(T, S, False)
    assert tracing.extract(h(traceparent="ff-bad", b3="0", **multi)) == TraceContext(OTHER_T, OTHER_S, True)


def test_the_first_of_repeated_headers_counts():
    headers = [(b"traceparent", f"00-{T}-{S}-01".encode()), (b"traceparent", f"00-{OTHER_T}-{OTHER_S}-00".encode())]
    assert tracing.extract(headers) == TraceContext(T, S, True)


# -- Tracer: new roots, sampling, ids ----------------------------------------------------------------------------

def split(span: tracing.Span) -> tuple[TraceContext, str, bool]:
    """A span as (the context it joins, its id, B3 or not), the ids as text."""
    trace_id, parent_id, sampled, span_id, b3 = span
    assert all(type(part) is bytes for part in (trace_id, parent_id, span_id))  # ids are ASCII bytes
    return TraceContext(trace_id.decode(), parent_id.decode(), sampled), span_id.decode(), b3


def as_span(trace_id: str, parent_id: str, sampled: bool, span_id: str, b3: bool) -> tracing.Span:
    """A tracing.Span from ids as text."""
    return trace_id.encode(), parent_id.encode(), sampled, span_id.encode(), b3


def is_id(value: str, length: int) -> bool:
    return len(value) == length and set(value) <= set("0123456789abcdef") and value != "0" * length


def test_a_caller_context_is_joined_with_a_new_span_id():
    ctx, span, b3 = split(tracing.Tracer(0.0, random.Random(1)).start(h(traceparent=f"00-{T}-{S}-01")))
    assert ctx == TraceContext(T, S, True)  # the caller's decision is kept even at 0 %
    assert is_id(span, 16) and span != S and not b3  # a W3C caller gets W3C only


def test_a_b3_caller_gets_b3_headers_too_and_a_w3c_caller_only_traceparent():
    tracer = tracing.Tracer(100.0, random.Random(1))
    ctx, span, b3 = split(tracer.start(h(x_b3_traceid=T, x_b3_spanid=S)))
    assert b3 and b"x-b3-traceid: " + T.encode() in tracing.upstream_lines(as_span(*ctx, span, b3))
    ctx, span, b3 = split(tracer.start(h(traceparent=f"00-{T}-{S}-01")))
    assert tracing.upstream_lines(as_span(*ctx, span, b3)) == f"traceparent: 00-{T}-{span}-01\r\n".encode()


def test_a_new_root_has_fresh_ids_and_no_parent():
    tracer = tracing.Tracer(100.0, random.Random(7))
    roots = [split(tracer.start([])) for _ in range(200)]
    assert all(ctx.parent_id == "" and ctx.sampled for ctx, _, _ in roots)
    assert all(is_id(ctx.trace_id, 32) and is_id(span, 16) for ctx, span, _ in roots)
    assert len({ctx.trace_id for ctx, _, _ in roots}) == 200 and len({span for _, span, _ in roots}) == 200


def test_ids_stay_unique_across_refills_of_the_id_pool():
    tracer = tracing.Tracer(0.0, random.Random(5))
    per_pool = tracing.ID_POOL_HEX // 48
    roots = [split(tracer.start([])) for _ in range(3 * per_pool + 7)]  # three refills, one partial pool
    joined = [split(tracer.start(h(traceparent=f"00-{T}-{S}-00")))[1] for _ in range(3 * tracing.ID_POOL_HEX // 16)]
    spans = [span for _, span, _ in roots] + joined
    assert all(is_id(span, 16) for span in spans) and len(set(spans)) == len(spans)
    assert len({ctx.trace_id for ctx, _, _ in roots}) == len(roots)


def test_same_seed_same_ids():
    a, b = tracing.Tracer(50.0, random.Random(3)), tracing.Tracer(50.0, random.Random(3))
    assert [a.start([]) for _ in range(20)] == [b.start([]) for _ in range(20)]


class ZeroRandom(random.Random):
    def getrandbits(self, k: int) -> int:
        return 0


def test_ids_are_never_zero_even_when_the_rng_draws_zero():
    ctx, span, _ = split(tracing.Tracer(100.0, ZeroRandom(0)).start([]))
    assert ctx.trace_id == "0" * 31 + "1" and span == "0" * 15 + "1"


@pytest.mark.parametrize(("percent", "expected"), [(0.0, 0), (-5.0, 0), (100.0, 2000), (250.0, 2000)])
def test_sampling_extremes(percent, expected):
    tracer = tracing.Tracer(percent, random.Random(11))
    assert sum(tracer.start([])[tracing.SAMPLED] for _ in range(2000)) == expected


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sampling_half_within_a_binomial_band(seed):
    n, p = 2000, 0.5
    tracer = tracing.Tracer(50.0, random.Random(seed))
    sampled = sum(tracer.start([])[tracing.SAMPLED] for _ in range(n))
    band = 5 * math.sqrt(n * p * (1 - p))  # five standard deviations: about 112
    assert abs(sampled - n * p) < band


def test_sampling_is_clamped():
    assert tracing.Tracer(-1.0).sampling == 0.0 and tracing.Tracer(101.0).sampling == 100.0


@pytest.mark.parametrize("headers", [{"b3": "0"}, {"x_b3_sampled": "0"}])
def test_a_callers_deny_without_ids_is_kept_on_the_new_root(headers):
    ctx, _, _ = split(tracing.Tracer(100.0, random.Random(1)).start(h(**headers)))
    assert not ctx.sampled


# -- upstream headers ----------------------------------------------------------------------------------------------

def test_upstream_lines_at_a_root():
    assert tracing.upstream_lines(as_span(T, "", True, S, True)) == (
        f"traceparent: 00-{T}-{S}-01\r\n"
        f"x-b3-traceid: {T}\r\nx-b3-spanid: {S}\r\n"
        "x-b3-sampled: 1\r\n").encode()


def test_upstream_lines_with_a_parent_unsampled():
    assert tracing.upstream_lines(as_span(T, OTHER_S, False, S, True)) == (
        f"traceparent: 00-{T}-{S}-00\r\n"
        f"x-b3-traceid: {T}\r\nx-b3-spanid: {S}\r\n"
        "x-b3-sampled: 0\r\n"
        f"x-b3-parentspanid: {OTHER_S}\r\n").encode()


def test_every_header_sent_upstream_is_one_the_proxy_replaces():
    names = {name for name, _ in parse(tracing.upstream_lines(as_span(T, OTHER_S, True, S, True)))}
    assert names <= tracing.TRACE_HEADERS and b"tracestate" not in tracing.TRACE_HEADERS


def hex_id(length: int):
    return st.text("0123456789abcdef", min_size=length, max_size=length).filter(lambda v: v != "0" * length)


@given(trace_id=hex_id(32), parent=st.one_of(st.just(""), hex_id(16)), span=hex_id(16), sampled=st.booleans())
def test_upstream_lines_round_trip_through_extract(trace_id, parent, span, sampled):
    headers = parse(tracing.upstream_lines(as_span(trace_id, parent, sampled, span, True)))
    assert tracing.extract(headers) == TraceContext(trace_id, span, sampled)
    # a callee that only reads B3 gets the same context
    b3_only = [(name, value) for name, value in headers if name != b"traceparent"]
    assert tracing.extract(b3_only) == TraceContext(trace_id, span, sampled)


# -- Tracer.start agrees with extract -----------------------------------------------------------------------------
# `start` has its own fast path (one loop, one match for a lone traceparent); whatever headers come, the context
# it joins must be the one `extract` reads, or a new root keeping the caller's sampling decision.

TRACE_VALUES = {
    b"traceparent": [f"00-{T}-{S}-01", f"00-{T}-{S}-00", f" 00-{T}-{S}-03 ", f"00-{T.upper()}-{S}-01",
                     f"01-{T}-{S}-01", f"00-{'0' * 32}-{S}-01", f"00-{T}-{'0' * 16}-01", f"00-{T}-{S}-1",
                     f"00-{T}-{S}-01-extra", "", "garbage"],
    b"b3": [f"{T}-{S}-1", f"{T64}-{S}-0", f"{T}-{S}", "0", "1", "d", f"{T}-{'0' * 16}-1", "nonsense"],
    b"x-b3-traceid": [T, T64, "xyz"],
    b"x-b3-spanid": [S, "0" * 16, "short"],
    b"x-b3-sampled": ["1", "0", "true", "false", "maybe"],
    b"x-b3-flags": ["1", "0"],
}
trace_header = st.sampled_from(sorted(TRACE_VALUES)).flatmap(
    lambda name: st.sampled_from(TRACE_VALUES[name]).map(lambda value: (name, value.encode())))
other_header = st.sampled_from([(b"host", b"books:9080"), (b"x-request-id", b"r-1"), (b"user-agent", b"curl")])


@given(st.lists(st.one_of(trace_header, other_header), max_size=6))
def test_start_joins_what_extract_reads_or_starts_a_root_keeping_the_decision(headers):
    expected = tracing.extract(headers)
    ctx, span, b3 = split(tracing.Tracer(50.0, random.Random(1)).start(headers))
    if expected is not None and expected.trace_id:
        assert ctx == expected
    else:
        assert ctx.parent_id == "" and is_id(ctx.trace_id, 32)
        if expected is not None:
            assert ctx.sampled == expected.sampled
    assert is_id(span, 16)
    assert b3 == any(name in tracing.TRACE_HEADERS and name != tracing.TRACEPARENT for name, _ in headers)


@pytest.mark.parametrize("percent", [1.0, 37.5, 99.0])
def test_a_root_is_sampled_by_its_trace_id_as_opentelemetrys_ratio_sampler_does(percent):
    """No second draw: the trace id, random already, decides (TraceIdRatioBased)."""
    tracer = tracing.Tracer(percent, random.Random(2))
    roots = [tracer.start([]) for _ in range(3000)]
    assert all(sampled == (int(trace_id, 16) < int(percent / 100 * 2 ** 128))
               for trace_id, _, sampled, _, _ in roots)
    assert 0 < sum(span[tracing.SAMPLED] for span in roots) < len(roots)
