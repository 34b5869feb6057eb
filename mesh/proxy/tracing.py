"""Distributed tracing in the proxy: W3C Trace Context and B3 in, one span per proxy hop, both formats out.

Every proxy a request passes records one span, as Envoy does: the ingress gateway's, then on each hop the
caller's sidecar (outbound, CLIENT) and the callee's sidecar (inbound, SERVER). The apps forward the trace
headers they received (DESIGN.md), so a request through ingress → gw → books → ratings is one trace:

    ingress (root)                 traceparent 00-T-A-01 sent to gw's sidecar
      gw inbound   (parent A)      00-T-B-01 sent to the gw app, which forwards it on its call to books
        gw outbound  (parent B)    00-T-C-01
          books inbound (parent C) 00-T-D-01 …

Extraction order: `traceparent` (W3C, version 00), then single-header `b3`, then `x-b3-traceid` /
`x-b3-spanid` / `x-b3-sampled` (64-bit trace ids are left-padded to 128 bits, as Zipkin does). A request
with none starts a new trace, sampled with the proxy's sampling percentage (Istio's default is 1 %;
the local runtime samples every request); a caller's sampling decision is kept. Upstream, the incoming
trace headers are replaced by `traceparent` (and `tracestate` passed on), plus the `x-b3-*` set when the
caller used B3, naming this hop's span as parent. Unsampled requests still propagate (flags 00, x-b3-sampled: 0) but
record nothing.
"""

from __future__ import annotations

import binascii
import os
import random
import re
from collections.abc import Callable
from typing import NamedTuple

from mesh.proxy.compiled import speedups as _speedups

TRACEPARENT = b"traceparent"
B3 = b"b3"
B3_TRACE_ID = b"x-b3-traceid"
B3_SPAN_ID = b"x-b3-spanid"
B3_PARENT = b"x-b3-parentspanid"
B3_SAMPLED = b"x-b3-sampled"
B3_FLAGS = b"x-b3-flags"
# Replaced on the way upstream (tracestate is vendor data: passed on as it came).
TRACE_HEADERS = frozenset({TRACEPARENT, B3, B3_TRACE_ID, B3_SPAN_ID, B3_PARENT, B3_SAMPLED, B3_FLAGS})
_HEX = frozenset("0123456789abcdef")
ZERO_TRACE = "0" * 32
ZERO_SPAN = "0" * 16
# A span's ids are ASCII bytes: what the proxy writes upstream and into the access log, made from the pool's
# bytes in one step (a str would be decoded, then encoded again for every line).
ZERO_TRACE_ID = ZERO_TRACE.encode()
ZERO_SPAN_ID = ZERO_SPAN.encode()
ONE_TRACE_ID = ZERO_TRACE_ID[:-1] + b"1"  # ids are never all zero (W3C): a zero draw becomes 1
ONE_SPAN_ID = ZERO_SPAN_ID[:-1] + b"1"
# Random hex drawn at once for span and trace ids (16 and 32 characters): one draw per ~100 requests instead
# of one per id; a larger pool saves little more and costs a longer pause when it is refilled.
ID_POOL_HEX = 4096


class TraceContext(NamedTuple):
    """A caller's trace context as read from its headers (`extract`)."""
    trace_id: str  # 32 lower-case hex
    parent_id: str  # the caller's span (16 hex), "" at a root
    sampled: bool


# One hop's span, as the exchange carries it: (trace id, parent span id (b"" at a root), sampled, this hop's span
# id, whether the caller speaks B3), the ids lower-case hex as ASCII bytes. A plain tuple: every proxy makes one
# per request, and a NamedTuple's constructor costs several times a tuple display.
Span = tuple[bytes, bytes, bool, bytes, bool]
TRACE_ID, PARENT_ID, SAMPLED, SPAN_ID = 0, 1, 2, 3


def _hex(value: str, length: int) -> bool:
    return len(value) == length and set(value) <= _HEX


# W3C version 00: exactly four fields, lower-case hex only (checked in one match: the ingress and every sidecar
# parse one per request).
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]([0-9a-f])")
_ODD_HEX = frozenset("13579bdf")  # the flags' low bit (sampled) is set
_TRACEPARENT_BYTES = re.compile(_TRACEPARENT.pattern.encode())  # `begin` matches the header as it came
_ODD_HEX_BYTES = frozenset(digit.encode() for digit in _ODD_HEX)


def _from_traceparent(value: str) -> TraceContext | None:
    match = _TRACEPARENT.fullmatch(value) or _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    trace_id, parent_id, flags_low = match.groups()
    if trace_id == ZERO_TRACE or parent_id == ZERO_SPAN:
        return None
    return TraceContext(trace_id, parent_id, flags_low in _ODD_HEX)


def _trace_id_128(value: str) -> str | None:
    value = value.strip().lower()
    if _hex(value, 16):
        value = "0" * 16 + value
    return value if _hex(value, 32) and value != ZERO_TRACE else None


def _from_b3_single(value: str) -> TraceContext | None:
    parts = value.strip().lower().split("-")
    if len(parts) < 2:  # "0"/"1"/"d" alone: a sampling decision without a trace: a new root that keeps it
        return TraceContext("", "", parts[0] in ("1", "d")) if parts[0] in ("0", "1", "d") else None
    trace_id = _trace_id_128(parts[0])
    if trace_id is None or not _hex(parts[1], 16) or parts[1] == ZERO_SPAN:
        return None
    sampled = parts[2] in ("1", "d") if len(parts) > 2 else True
    return TraceContext(trace_id, parts[1], sampled)


def _trace_headers(headers: list[tuple[bytes, bytes]]) -> dict[bytes, str]:
    found: dict[bytes, str] = {}
    for name, value in headers:
        if name in TRACE_HEADERS and name not in found:
            found[name] = value.decode("latin-1")
    return found


def extract(headers: list[tuple[bytes, bytes]]) -> TraceContext | None:
    """The caller's trace context from request headers, or None (start a new trace). A context with an
    empty trace id carries only the caller's sampling decision (B3 `b3: 0`, `x-b3-sampled: 0`)."""
    return _context(_trace_headers(headers))


def _context(found: dict[bytes, str]) -> TraceContext | None:
    if not found:
        return None
    decision = None  # a sampling decision without ids, used only when no full context is found
    if TRACEPARENT in found and (ctx := _from_traceparent(found[TRACEPARENT])) is not None:
        return ctx
    if B3 in found and (ctx := _from_b3_single(found[B3])) is not None:
        if ctx.trace_id:
            return ctx
        decision = ctx
    trace_id = _trace_id_128(found.get(B3_TRACE_ID, ""))
    span_id = found.get(B3_SPAN_ID, "").strip().lower()
    sampled_header = found.get(B3_SAMPLED, "").strip()
    sampled = sampled_header in ("1", "true") or found.get(B3_FLAGS, "").strip() == "1"
    if trace_id is not None and _hex(span_id, 16) and span_id != ZERO_SPAN:
        return TraceContext(trace_id, span_id, sampled or not sampled_header)
    if decision is None and (sampled_header in ("0", "1", "true", "false") or B3_FLAGS in found):
        decision = TraceContext("", "", sampled)
    return decision


class Tracer:
    """Span ids and sampling for one proxy; `rng` is injectable so tests are deterministic.

    `start` runs once per request in every proxy, so its common cases are kept to a handful of operations:
    no trace header (a new root) or one `traceparent` (one match). Ids are cut from a pool of random hex
    drawn ID_POOL_HEX characters at a time (one draw per about a hundred requests), in line: a method call
    per id would cost as much as the rest of `start`. The pool is `rng.randbytes` made hex. With the compiled
    helpers (mesh.proxy.compiled), `begin` and `span_id` are theirs, which keep their own pool, drawn by
    xoshiro256** seeded from `rng` (a fifth of randbytes' cost), and this pool comes from the same generator
    (`_draw`): the same `rng` so gives other ids with the helpers than without, each sequence reproducible."""

    __slots__ = ("sampling", "_rng", "_sampled_below", "_pool", "_used", "_draw", "begin", "span_id")

    def __init__(self, sampling_percent: float, rng: random.Random | None = None) -> None:
        self.sampling = max(0.0, min(100.0, sampling_percent))
        self._rng = rng or random.Random(int.from_bytes(os.urandom(8), "big"))
        # A root is sampled when its trace id, read as a 128-bit number, is below `sampling` % of them, as
        # OpenTelemetry's TraceIdRatioBased sampler decides: the id is a random draw already, and the same
        # order holds between lower-case hex strings of one length, so the decision is one string comparison.
        # "g" is above every id (100 %), "" below all (0 %).
        if self.sampling >= 100.0:
            self._sampled_below = b"g"
        elif self.sampling <= 0.0:
            self._sampled_below = b""
        else:
            self._sampled_below = b"%032x" % int(self.sampling / 100.0 * 2 ** 128)
        self._pool = b""
        self._used = ID_POOL_HEX
        if _speedups is not None:  # the common cases compiled; every other one comes back to `_begin`
            ids = _speedups.TraceIds(self._rng, ID_POOL_HEX, self._sampled_below, self._begin)
            self.begin, self.span_id, self._draw = ids.begin, ids.span_id, ids.draw
        else:
            self.begin, self.span_id, self._draw = self._begin, self._span_id, self._random_hex

    def _random_hex(self) -> bytes:
        # Bytes made hex: a third of the cost of formatting one 16,384-bit number as hex (5.6 µs against 15.8).
        return binascii.hexlify(self._rng.randbytes(ID_POOL_HEX // 2))

    def _refill(self) -> bytes:
        self._pool = self._draw()
        self._used = 0
        return self._pool

    def _span_id(self) -> bytes:
        used = self._used
        pool = self._pool if used <= ID_POOL_HEX - 16 else self._refill()
        used = self._used
        self._used = used + 16
        span = pool[used:used + 16]
        return span if span != ZERO_SPAN_ID else ONE_SPAN_ID

    def start(self, headers: list[tuple[bytes, bytes]]) -> Span:
        """This hop's span: in the caller's trace, or a new root."""
        traceparent = None
        b3 = False
        for name, value in headers:
            if name in TRACE_HEADERS:
                if name != TRACEPARENT:
                    b3 = True
                elif traceparent is None:
                    traceparent = value
        return self.begin(traceparent, b3, headers)

    def _begin(self, traceparent: bytes | None, b3: bool, headers: list[tuple[bytes, bytes]]) -> Span:
        """`begin` in pure Python (the instance's `begin` is this, or the compiled twin of its two common
        cases, which hands the others here): `start` after the scan of the headers, which the upstream
        head's builder does as it copies them: the first `traceparent`, and whether any B3 header came (then
        `headers` are read again, in full)."""
        decision = None  # a caller's sampling decision sent without ids (B3 `b3: 0`, `x-b3-sampled: 1`)
        if b3:  # B3, alone or beside traceparent: the general path
            ctx = _context(_trace_headers(headers))
        elif traceparent is not None:
            match = _TRACEPARENT_BYTES.fullmatch(traceparent)
            if match is not None:  # the common case, in line
                trace_id, parent_id, flags_low = match.groups()
                if trace_id != ZERO_TRACE_ID and parent_id != ZERO_SPAN_ID:
                    return trace_id, parent_id, flags_low in _ODD_HEX_BYTES, self.span_id(), False
            ctx = _from_traceparent(traceparent.decode("latin-1"))
        else:
            ctx = None
        if ctx is not None:
            if ctx.trace_id:  # read from text that matched lower-case hex: ASCII
                return ctx.trace_id.encode(), ctx.parent_id.encode(), ctx.sampled, self.span_id(), b3
            decision = ctx
        # A new trace (in line: at an edge every request starts one), with the caller's sampling decision when
        # it sent one without ids, else ours. The trace and span ids are cut from one draw.
        used = self._used
        pool = self._pool if used <= ID_POOL_HEX - 48 else self._refill()
        used = self._used
        self._used = used + 48
        trace_id = pool[used:used + 32]
        span_id = pool[used + 32:used + 48]
        if trace_id == ZERO_TRACE_ID:
            trace_id = ONE_TRACE_ID
        if span_id == ZERO_SPAN_ID:
            span_id = ONE_SPAN_ID
        sampled = decision.sampled if decision is not None else trace_id < self._sampled_below
        return trace_id, b"", sampled, span_id, b3


def python_upstream_lines(span: Span) -> bytes:
    """The trace headers sent upstream: this hop's span is the callee's parent. Always W3C; B3 too when
    the caller used B3, so a Zipkin-instrumented chain keeps its format."""
    trace_id, parent_id, sampled, span_id, b3 = span
    traceparent = b"traceparent: 00-" + trace_id + b"-" + span_id + (b"-01\r\n" if sampled else b"-00\r\n")
    if not b3:
        return traceparent
    lines = [traceparent, b"x-b3-traceid: " + trace_id + b"\r\nx-b3-spanid: " + span_id + b"\r\n",
             b"x-b3-sampled: " + (b"1" if sampled else b"0") + b"\r\n"]
    if parent_id:
        lines.append(b"x-b3-parentspanid: " + parent_id + b"\r\n")
    return b"".join(lines)


def _upstream_lines_of(speedups) -> Callable[[Span], bytes]:
    """`upstream_lines`, compiled when the helpers are (the B3 case stays in Python)."""
    return speedups.upstream_lines_with(python_upstream_lines) if speedups is not None else python_upstream_lines


upstream_lines = _upstream_lines_of(_speedups)  # every proxy writes them once per request
