"""The Python cost of one request through an outbound listener, with no sockets: deterministic enough to see
a microsecond.

A request is fed to the proxy's own protocol objects over the mock transports of the protocol tests
(`tests/mesh/proxy/fakes.py`: a client connection, a pooled upstream answering 1 KiB): parsing, routing,
the upstream head, the response head, stats and telemetry all run, the event loop and the kernel do not.
Telemetry modes are measured interleaved, `CYCLES` rounds of `REQUESTS` each, and each mode's median per
request is printed, with the part spent formatting access-log lines shown apart. End-to-end
figures (`make bench`, `bench.interleaved`) include what this leaves out (system calls, the loop, cache
misses): in the pair a microsecond here has cost two to three there.

    .venv/bin/python -m bench.hotpath [--cycles 15] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh.proxy import telemetry, tracing  # noqa: E402
from tests.mesh.proxy.fakes import Proxy, bookinfo_view, settle  # noqa: E402

REQUEST = b"GET /books HTTP/1.1\r\nHost: books:9080\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n" + b"x" * 1024
MODES = ("telemetry-off", "tracing-only", "telemetry-on")


class NoTimers:
    """Telemetry's loop. A slice of access log entries is formatted in a callback as soon as it waits
    (call_soon): run here right after the request that scheduled it, as the loop would, and timed apart. The
    flush timer never fires: what is left is flushed by hand at the end of a round."""

    def __init__(self) -> None:
        self.soon: list = []

    def call_later(self, delay, callback, *args):
        return None

    def call_soon(self, callback, *args):
        self.soon.append(callback)

    def create_task(self, coro):
        coro.close()


def _telemetry(mode: str, counters) -> telemetry.Telemetry:
    if mode == "telemetry-off":
        return telemetry.Telemetry("gw-v1", NoTimers(), counters, stream=None, keep_recent=False)  # --telemetry off
    stream = io.BytesIO() if mode == "telemetry-on" else None
    return telemetry.Telemetry("gw-v1", NoTimers(), counters, tracer=tracing.Tracer(1.0), stream=stream)


async def _connected(mode: str):
    proxy = Proxy(bookinfo_view())
    proxy.runtime.telemetry = _telemetry(mode, proxy.runtime.counters)
    client = proxy.client()
    client.send(REQUEST)
    await settle()
    (upstream,) = proxy.net.upstreams
    upstream.respond(RESPONSE)
    if not client.transport.data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{mode}: the first request was not answered 200")
    client.transport.clear()
    upstream.transport.clear()
    return proxy, client, upstream


def _round(proxy, client, upstream, requests: int) -> tuple[float, float]:
    """(µs per request, of which µs formatting and writing access-log lines)."""
    tel = proxy.runtime.telemetry
    soon = tel.loop.soon
    formatting = 0.0
    start = time.perf_counter()
    for _ in range(requests):
        client.send(REQUEST)
        upstream.respond(RESPONSE)
        if soon:
            began = time.perf_counter()
            while soon:
                soon.pop()()
            formatting += time.perf_counter() - began
    served = time.perf_counter()
    while tel.logs:  # the last entries, short of a slice
        tel.flush()
    if tel.stream is not None:
        tel.stream.seek(0)
        tel.stream.truncate()
    end = time.perf_counter()
    answered = client.transport.data.count(b"HTTP/1.1 200")
    client.transport.clear()
    upstream.transport.clear()
    if answered != requests:
        raise RuntimeError(f"{answered} of {requests} requests answered 200")
    return (end - start) / requests * 1e6, (formatting + end - served) / requests * 1e6


async def measure(cycles: int, requests: int, modes: tuple[str, ...] = MODES) -> dict[str, dict]:
    connected = {mode: await _connected(mode) for mode in modes}
    rounds: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    for _ in range(cycles):
        for mode in modes:
            rounds[mode].append(_round(*connected[mode], requests))
    return {mode: {"us_per_request": statistics.median(r[0] for r in got),
                   "format_us_per_request": statistics.median(r[1] for r in got)} for mode, got in rounds.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.hotpath", description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=15)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args.cycles, args.requests))
    base = figures[MODES[0]]["us_per_request"]
    for mode, got in figures.items():
        print(f"{mode:14s} {got['us_per_request']:6.2f} µs/request (+{got['us_per_request'] - base:5.2f}), "
              f"of which formatting lines {got['format_us_per_request']:.2f}")


if __name__ == "__main__":
    main()
