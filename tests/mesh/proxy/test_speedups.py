"""The compiled telemetry helpers (mesh.proxy._speedups) against the pure-Python reference, on generated
input: the same access log text, the same spans from the same random draws, the same trace lines. And the
switch that turns them off (WEIR_NO_EXTENSIONS)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.proxy import compiled, log_line, tracing
from mesh.view import model
from tests.mesh.proxy.implementations import require_compiled
from tests.mesh.proxy.test_log_line import BASE, entry

HEX = "0123456789abcdef"
hex_text = st.text(st.sampled_from(HEX), min_size=1, max_size=40)
client_bytes = st.binary(max_size=40) | st.sampled_from([b"req-1", b"a" * 36, b"id\x7f", b"id\x1f", b"id\xe9", b"\"", b"\\"])


@pytest.fixture(scope="module")
def speedups():
    return require_compiled()


def python_tracer(percent: float, seed: int) -> tracing.Tracer:
    saved = tracing._speedups
    tracing._speedups = None
    try:
        return tracing.Tracer(percent, random.Random(seed))
    finally:
        tracing._speedups = saved


@settings(max_examples=300)
@given(batch=st.lists(st.fixed_dictionaries({
    "wall": st.floats(0, 7_200).map(lambda s: BASE + s), "duration_s": st.floats(0, 100),
    "request_id": st.none() | client_bytes, "trace": st.sampled_from([None, ("0" * 31 + "1", "", True, "1" * 16, False)]),
    "path": st.sampled_from(["/", "/books", '/q"\\\x01é']), "authority": client_bytes,
    "endpoint": st.sampled_from([None, model.Endpoint("127.0.0.1", 9080)]),
}), max_size=8))
def test_compiled_lines_are_the_python_lines(speedups, batch):
    entries = [entry(**fields) for fields in batch]
    compiled_format, python_format = log_line.LineFormat("gw-v1"), log_line.LineFormat("gw-v1")
    # Twice each: the second batch is formatted from the caches the first one filled.
    for _ in range(2):
        assert speedups.format_lines(compiled_format, entries) == python_format.python_lines(entries)


def traceparents():
    valid = st.builds(lambda t, s, f: f"00-{t}-{s}-{f}".encode(), st.text(st.sampled_from(HEX), min_size=32, max_size=32),
                      st.text(st.sampled_from(HEX), min_size=16, max_size=16), st.text(st.sampled_from(HEX), min_size=2,
                                                                                        max_size=2))
    mutated = st.builds(lambda v, i, c: v[:i] + bytes([c]) + v[i + 1:], valid, st.integers(0, 54), st.integers(0, 255))
    zeros = st.sampled_from([f"00-{'0' * 32}-{'1' * 16}-01".encode(), f"00-{'1' * 32}-{'0' * 16}-01".encode(),
                             f" 00-{'1' * 32}-{'2' * 16}-01 ".encode(), f"00-{'A' * 32}-{'2' * 16}-01".encode()])
    return st.none() | valid | mutated | zeros | st.binary(max_size=60)


@settings(max_examples=500)
@given(traceparent=traceparents(), b3=st.booleans(), percent=st.sampled_from([0.0, 1.0, 50.0, 100.0]),
       seed=st.integers(0, 2**32))
def test_compiled_begin_gives_the_python_span_from_the_same_draws(speedups, traceparent, b3, percent, seed):
    headers = [(b"traceparent", traceparent)] if traceparent is not None else []
    if b3:
        headers.append((b"b3", b"1"))
    fast = tracing.Tracer(percent, random.Random(seed))
    slow = python_tracer(percent, seed)
    assert fast.begin is not fast._begin  # the compiled one
    for _ in range(3):  # and again, cut further into the same pool
        assert fast.begin(traceparent, b3, headers) == slow.begin(traceparent, b3, headers)


@given(trace_id=hex_text.filter(lambda t: len(t) == 32) | st.just("4bf92f3577b34da6a3ce929d0e0e4736"),
       span_id=st.just("00f067aa0ba902b7") | st.text(st.sampled_from(HEX), min_size=16, max_size=16),
       parent=st.sampled_from(["", "b7ad6b7169203331"]), sampled=st.booleans(), b3=st.booleans())
def test_compiled_upstream_lines_are_the_python_ones(speedups, trace_id, span_id, parent, sampled, b3):
    span = (trace_id, parent, sampled, span_id, b3)
    assert tracing._upstream_lines_of(speedups)(span) == tracing.python_upstream_lines(span)


def test_a_span_with_ids_of_the_wrong_length_is_refused_not_overrun(speedups):
    with pytest.raises(ValueError, match="32 and 16"):
        speedups.traceparent_line(("abc", "", True, "0" * 16, False))


@pytest.mark.parametrize("value", ["1", "yes"])
def test_weir_no_extensions_turns_the_compiled_helpers_off(monkeypatch, value):
    monkeypatch.setenv(compiled.NO_EXTENSIONS_ENV, value)
    assert compiled.load() is None


@pytest.mark.parametrize("value", ["", "0"])
def test_an_empty_or_zero_weir_no_extensions_leaves_them_on(speedups, monkeypatch, value):
    monkeypatch.setenv(compiled.NO_EXTENSIONS_ENV, value)
    assert compiled.load() is speedups
