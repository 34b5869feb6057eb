"""The compiled telemetry helpers (mesh.proxy._speedups) against the pure-Python reference, on generated
input: the same access log text, the same spans from the same random draws (the Python tracer drawing its ids
with the compiled generator, tests/mesh/proxy/xoshiro.py), the same trace lines. The compiled id pool against
xoshiro256**'s published outputs. And the switch that turns the helpers off (WEIR_NO_EXTENSIONS)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.proxy import compiled, log_line, tracing
from mesh.view import model
from tests.mesh.proxy.implementations import require_compiled
from tests.mesh.proxy.test_log_line import BASE, entry
from tests.mesh.proxy.xoshiro import Xoshiro256, XoshiroTracer

HEX = "0123456789abcdef"
hex_text = st.text(st.sampled_from(HEX), min_size=1, max_size=40)
client_bytes = st.binary(max_size=40) | st.sampled_from([b"req-1", b"a" * 36, b"id\x7f", b"id\x1f", b"id\xe9", b"\"", b"\\"])


@pytest.fixture(scope="module")
def speedups():
    return require_compiled()


def python_tracer(percent: float, seed: int) -> tracing.Tracer:
    """The pure-Python tracer, drawing its ids as the compiled one does (xoshiro256** seeded from the rng)."""
    saved = tracing._speedups
    tracing._speedups = None
    try:
        return XoshiroTracer(percent, random.Random(seed))
    finally:
        tracing._speedups = saved


ENDPOINTS = (None, model.Endpoint("127.0.0.1", 9080), model.Endpoint("127.0.0.1", 9081))  # shared, as a
# Target's: the compiled shortcut compares endpoints by identity
principals = st.sampled_from([None, "", "spiffe://cluster.local/ns/a/sa/b", 'x","evil":"1', "\u00e9\u2603\U0001f600"])
entries = st.fixed_dictionaries({
    "wall": st.floats(0, 7_200).map(lambda s: BASE + s) | st.sampled_from([-0.5, -1.25, float("nan"), 1e12]),
    "duration_s": st.floats(0, 100) | st.sampled_from([-0.0015, 1e17, float("inf")]),
    "request_id": st.none() | client_bytes,
    "trace": st.sampled_from([None, (b"0" * 31 + b"1", b"", True, b"1" * 16, False)]),
    "method": st.sampled_from(["GET", "POST"]), "path": st.sampled_from(["/", "/books", '/q"\\\x01é']),
    "status": st.sampled_from([200, 503, 200.0]), "flag": st.sampled_from(["-", "UH"]),
    "received": st.sampled_from([0, 7]), "sent": st.sampled_from([0, 512, 100_000]),
    "endpoint": st.sampled_from(ENDPOINTS), "cluster": st.sampled_from(["", "outbound|9080|v1|b.svc"]),
    "principal": principals, "remote": st.sampled_from(["", "10.0.0.9"]), "authority": client_bytes,
    "user_agent": st.none() | st.sampled_from([b"curl/8", b'a"b']), "direction": st.sampled_from(model.DIRECTIONS),
})


def format_both(speedups, entries_: list[tuple]) -> list:
    """Both implementations' outcomes, checked equal: each one's text, or the exception type both raised."""
    compiled_format, python_format = log_line.LineFormat("gw-v1"), log_line.LineFormat("gw-v1")
    outcomes = []
    for run in (lambda: speedups.format_lines(compiled_format, entries_), lambda: python_format.python_lines(entries_)):
        try:
            outcomes.append(run())
        except (OverflowError, OSError, ValueError) as exc:
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]
    return outcomes


@settings(max_examples=500)
@given(batch=st.lists(entries, max_size=8), repeat=st.integers(1, 3))
def test_compiled_lines_are_the_python_lines(speedups, batch, repeat):
    """Runs of equal entries (`repeat`) take the compiled shortcut past the key; every field varies."""
    format_both(speedups, [entry(**fields) for fields in batch for _ in range(repeat)])


# Two values of each cached field; the other fields as `entry` makes them, with one shared endpoint.
ALTERNATIVES = {
    "method": ("GET", "POST"), "path": ("/a", "/b"), "status": (200, 503), "flag": ("-", "UH"), "received": (0, 7),
    "sent": (0, 9), "endpoint": ENDPOINTS[1:], "cluster": ("", "c"), "authority": (b"a", b"b"),
    "user_agent": (None, b"ua"), "remote": ("", "10.0.0.9"), "principal": (None, "spiffe://x"),
    "direction": ("inbound", "outbound"),
}


@pytest.mark.parametrize("field", ALTERNATIVES)
def test_a_line_differing_from_the_previous_in_one_cached_field_gets_its_own_text(speedups, field):
    first, second = ALTERNATIVES[field]
    shared = {"endpoint": ENDPOINTS[1]}
    batch = [entry(**{**shared, field: first}), entry(**{**shared, field: second}), entry(**{**shared, field: first})]
    compiled_text, python_text = format_both(speedups, batch)
    assert len(set(compiled_text.splitlines())) == 2


def test_the_compiled_key_is_the_python_key():
    """The compiled code builds LineFormat's key and hands it to the Python `_rest`, which reads it by
    position: the same fields, in the same order."""
    assert [log_line.ENTRY_FIELDS[i] for i in require_compiled().KEY_FIELDS] == [
        "method", "path", "status", "flag", "received", "sent", "endpoint", "cluster", "authority", "user_agent",
        "remote", "principal", "direction"]


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
    span = (trace_id.encode(), parent.encode(), sampled, span_id.encode(), b3)
    assert tracing._upstream_lines_of(speedups)(span) == tracing.python_upstream_lines(span)


class FixedSeed(random.Random):
    def __init__(self, seed: int) -> None:
        super().__init__(0)
        self.seed_bits = seed

    def getrandbits(self, k: int) -> int:
        return self.seed_bits


def test_the_compiled_id_pool_is_xoshiro256_starstar_as_published(speedups):
    # The reference C code's first outputs from the state {1, 2, 3, 4}; 0 is never an id (W3C), it becomes 1.
    tracer = tracing.Tracer(100.0, FixedSeed(1 | 2 << 64 | 3 << 128 | 4 << 192))
    assert [tracer.span_id() for _ in range(4)] == [b"%016x" % 11520, b"0" * 15 + b"1", b"%016x" % 1509978240,
                                                    b"%016x" % 1215971899390074240]


@settings(max_examples=20)
@given(seed=st.integers(0, 2**256 - 1))
def test_the_compiled_id_pool_is_the_python_reference_across_refills(speedups, seed):
    fast = tracing.Tracer(100.0, FixedSeed(seed))
    reference = Xoshiro256(seed)
    words = [b"%016x" % reference.next() for _ in range(3 * tracing.ID_POOL_HEX // 16)]
    assert [fast.span_id() for _ in range(len(words))] == [w if w != b"0" * 16 else b"0" * 15 + b"1" for w in words]


@pytest.mark.parametrize("pool_hex", [0, 32, 100])
def test_an_id_pool_that_cannot_hold_whole_ids_is_refused(speedups, pool_hex):
    with pytest.raises(ValueError, match="multiple of 16"):
        speedups.TraceIds(random.Random(1), pool_hex, b"g", None)


def test_a_span_with_ids_of_the_wrong_length_is_refused_not_overrun(speedups):
    with pytest.raises(ValueError, match="32 and 16"):
        speedups.traceparent_line((b"abc", b"", True, b"0" * 16, False))


@pytest.mark.parametrize("value", ["1", "yes"])
def test_weir_no_extensions_turns_the_compiled_helpers_off(monkeypatch, value):
    monkeypatch.setenv(compiled.NO_EXTENSIONS_ENV, value)
    assert compiled.load() is None


@pytest.mark.parametrize("value", ["", "0"])
def test_an_empty_or_zero_weir_no_extensions_leaves_them_on(speedups, monkeypatch, value):
    monkeypatch.setenv(compiled.NO_EXTENSIONS_ENV, value)
    assert compiled.load() is speedups
