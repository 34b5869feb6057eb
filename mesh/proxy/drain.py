"""Graceful drain of downstream connections on shutdown (Envoy's drain manager, Istio's
terminationDrainDuration): called by `mesh.proxy.server.ProxyServer.shutdown` once the listeners are closed.

The sequence: every idle keep-alive connection is closed at once; a connection with an exchange in flight
is told to drain (`DownstreamConnection.drain`: its last response carries `Connection: close` and it closes
after it); the drain waits until every such connection has closed or the drain timeout passes; what is
left is closed (its in-flight exchanges are cancelled). Each connection is counted once in
`weir_downstream_cx_drain_closed_total{state}`: `idle` (closed at once), `finished` (closed after its
in-flight exchanges completed, or by its client) or `forced` (closed at the deadline).
The clock and the sleep are injected: tests drive the sequence without sockets or real time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from mesh.proxy import stats

log = logging.getLogger("weir.proxy.drain")

# Istio's terminationDrainDuration default: long enough for a typical in-flight request, short enough
# for the kubelet's 30 s terminationGracePeriodSeconds.
DRAIN_TIMEOUT_S = 5.0
# How often the drain checks whether the busy connections have closed: a small fraction of a request.
DRAIN_POLL_S = 0.05
COUNTER = "downstream_cx_drain_closed_total"
IDLE, FINISHED, FORCED = "idle", "finished", "forced"


@dataclass(slots=True)
class DrainResult:
    """How the downstream connections open at shutdown ended; `seconds`: how long the drain took."""

    idle: int = 0
    finished: int = 0
    forced: int = 0
    seconds: float = 0.0

    def __repr__(self) -> str:
        return (f"<Drain idle={self.idle} finished={self.finished} forced={self.forced} "
                f"in {self.seconds:.2f}s>")


def start(connections: Iterable) -> tuple[int, list]:
    """Begin the drain: (idle connections closed now, busy connections left to finish)."""
    closed, busy = 0, []
    for conn in list(connections):
        if conn.closed:
            continue
        if conn.drain():
            closed += 1
        else:
            busy.append(conn)
    return closed, busy


def still_open(busy: list) -> list:
    return [conn for conn in busy if not conn.closed]


async def drain(connections: Iterable, counters: stats.Counters, *, timeout: float = DRAIN_TIMEOUT_S,
                clock: Callable[[], float] | None = None,
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> DrainResult:
    """Drain `connections` (the proxy's live set) up to `timeout` seconds; close what is left."""
    clock = clock or asyncio.get_running_loop().time
    began = clock()
    result = DrainResult()
    result.idle, busy = start(connections)
    counters.inc(COUNTER, result.idle, state=IDLE)
    total = len(busy)
    deadline = began + timeout
    while busy and clock() < deadline:
        await sleep(DRAIN_POLL_S)
        busy = still_open(busy)
    result.finished = total - len(busy)
    result.forced = len(busy)
    for conn in busy:
        conn.close()
    counters.inc(COUNTER, result.finished, state=FINISHED)
    counters.inc(COUNTER, result.forced, state=FORCED)
    result.seconds = clock() - began
    log.info("drained downstream connections: %d idle, %d finished, %d forced, in %.2f s",
             result.idle, result.finished, result.forced, result.seconds)
    return result
