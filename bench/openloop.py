"""Open-loop latency: a schedule of intended send times and the latency math over it (wrk2's idea).

A closed-loop client (wrk) waits for each answer before sending the next, so a slow server slows the
client down and its stalls vanish from the figures ("coordinated omission"). Here request *i* is due at
`start + i / rate` whatever happened before; its latency is `completed - intended`, so time spent waiting
for a free connection or behind a stall is counted. This module is pure (no sockets, no clock of its
own); `bench.loadclient` does the I/O and calls it; `python -m bench.openloop` runs one measurement and
prints its summary as JSON (what `bench.run` reads).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

DEFAULT_WARMUP_S = 1.0  # leading seconds sent but not measured (connection set-up, proxy pools warming)


class Schedule:
    """Request i is due at `start + i / rate`, for i < rate × duration (warmup included)."""

    __slots__ = ("rate", "start", "count", "next")

    def __init__(self, rate: float, duration: float, start: float) -> None:
        if rate <= 0 or duration <= 0:
            raise ValueError("rate and duration must be positive")
        self.rate = rate
        self.start = start
        self.count = int(round(rate * duration))
        self.next = 0  # first index not yet handed out

    def intended(self, index: int) -> float:
        return self.start + index / self.rate

    def due(self, now: float) -> range:
        """Indices whose intended time is ≤ now and that were not handed out yet (a late tick gets all)."""
        if now < self.start:
            return range(self.next, self.next)
        # The 1e-9 absorbs float error so that a tick landing exactly on an intended time counts it.
        upto = min(self.count, math.floor((now - self.start) * self.rate + 1e-9) + 1)
        due = range(self.next, max(self.next, upto))
        self.next = due.stop
        return due

    @property
    def finished(self) -> bool:
        return self.next >= self.count

    @property
    def end(self) -> float:
        return self.intended(self.count)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100); NaN for an empty list."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(schedule: Schedule, sent: list[float], completed: list[float], ok: bytearray,
              warmup_s: float = DEFAULT_WARMUP_S) -> dict:
    """Latency figures of the requests intended after the warmup.

    `sent[i]`/`completed[i]` are clock readings (NaN = never); `ok[i]` is 1 for a 2xx/3xx answer.
    Requests never completed, or answered with an error, count as errors and not as latency samples.
    """
    first = min(schedule.count, math.ceil(warmup_s * schedule.rate))
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    last_done = schedule.intended(first)
    for i in range(first, schedule.count):
        intended = schedule.intended(i)
        if sent[i] == sent[i]:  # not NaN
            lags.append(sent[i] - intended)
        if completed[i] != completed[i] or not ok[i]:
            errors += 1
            continue
        latencies.append(completed[i] - intended)
        last_done = max(last_done, completed[i])
    latencies.sort()
    lags.sort()
    window = last_done - schedule.intended(first)
    ms = 1000.0
    return {
        "target_rps": schedule.rate,
        "sent_total": sum(1 for t in sent if t == t),  # warmup included: what the proxies' CPU time covers
        "requests": schedule.count - first,
        "completed": len(latencies),
        "errors": errors,
        "achieved_rps": len(latencies) / window if window > 0 else 0.0,
        "p50_ms": percentile(latencies, 50) * ms,
        "p90_ms": percentile(latencies, 90) * ms,
        "p99_ms": percentile(latencies, 99) * ms,
        "p999_ms": percentile(latencies, 99.9) * ms,
        "max_ms": (latencies[-1] if latencies else math.nan) * ms,
        "mean_ms": (sum(latencies) / len(latencies) if latencies else math.nan) * ms,
        "send_lag_p50_ms": percentile(lags, 50) * ms,  # how late the client itself sent: its own accuracy
        "send_lag_p99_ms": percentile(lags, 99) * ms,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.openloop", description="open-loop HTTP/1.1 latency at a fixed rate")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--host-header", default=None, help="Host header (default host:port)")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (after the warmup)")
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S)
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections opened up front")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from bench import loadclient  # the I/O side; imported here so that this module stays pure

    args = parse_args(argv)
    host_header = args.host_header or f"{args.host}:{args.port}"
    request = f"GET {args.path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: weir-openloop\r\n\r\n".encode()
    result = loadclient.run(args.host, args.port, request, rate=args.rate,
                            duration=args.duration + args.warmup, connections=args.connections)
    summary = summarize(result.schedule, result.sent, result.completed, result.ok, args.warmup)
    summary.update(timer=result.timer, connections_opened=result.connections_opened)
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
