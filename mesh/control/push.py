"""Debounced, versioned push (Istio's debounce + push queue).

A config or registry change calls `Pusher.trigger()`. Changes are merged until the config has been quiet
for `QUIET_PERIOD`, but never held longer than `MAX_DELAY` after the first one; then ONE new snapshot is
taken and every connected proxy is queued for a rebuild. A proxy already queued is not queued twice
(per-proxy coalescing). `mesh.control.discovery.Discovery.refresh` rebuilds and wakes the proxy's long
poll only when its view changed (equal view → same version → no push).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mesh.control import discovery as discovery_mod

log = logging.getLogger(__name__)

QUIET_PERIOD = 0.1  # seconds without a new change before a snapshot is taken
MAX_DELAY = 0.5  # seconds: a stream of changes cannot postpone a snapshot longer than this
YIELD_EVERY = 16  # rebuilds between yields to the event loop (long polls keep being served)


class Debouncer:
    """Merges change events; `due()` once quiet for `quiet` s or `max_delay` s after the first event."""

    def __init__(self, clock: Callable[[], float], quiet: float = QUIET_PERIOD, max_delay: float = MAX_DELAY):
        self.clock = clock
        self.quiet = quiet
        self.max_delay = max_delay
        self._first: float | None = None
        self._last = 0.0
        self._count = 0

    def event(self) -> None:
        now = self.clock()
        if self._first is None:
            self._first = now
        self._last = now
        self._count += 1

    @property
    def pending(self) -> int:
        return self._count

    def deadline(self) -> float | None:
        if self._first is None:
            return None
        return min(self._last + self.quiet, self._first + self.max_delay)

    def due(self) -> bool:
        deadline = self.deadline()
        return deadline is not None and self.clock() >= deadline

    def take(self) -> int:
        """Reset; returns how many events were merged."""
        count, self._first, self._count = self._count, None, 0
        return count

    def __repr__(self) -> str:
        return f"<Debouncer pending={self._count} deadline={self.deadline()}>"


class PushQueue:
    """Proxies waiting for a rebuild, in arrival order; enqueueing a pending proxy merges."""

    def __init__(self) -> None:
        self._pending: dict[str, None] = {}

    def enqueue(self, proxy_ids: Iterable[str]) -> None:
        for pid in proxy_ids:
            self._pending.setdefault(pid, None)

    def pop(self) -> str | None:
        if not self._pending:
            return None
        pid = next(iter(self._pending))
        del self._pending[pid]
        return pid

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, proxy_id: object) -> bool:
        return proxy_id in self._pending

    def __repr__(self) -> str:
        return f"<PushQueue pending={len(self._pending)}>"


@dataclass(slots=True)
class PushStats:
    triggers: int = 0  # change events received
    snapshots: int = 0  # debounced snapshots taken
    pushes: int = 0  # proxy views that changed (a long poll answers)
    unchanged: int = 0  # rebuilds that gave the same view (nothing sent)
    last_snapshot_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "triggers": self.triggers,
            "snapshots": self.snapshots,
            "pushes": self.pushes,
            "unchanged": self.unchanged,
            "lastSnapshotAt": self.last_snapshot_at,
        }


class Pusher:
    """Turns change events into snapshots and per-proxy rebuilds. `step()` is the sync core."""

    def __init__(
        self,
        discovery: discovery_mod.Discovery,
        make_snapshot: Callable[[int], Any],
        clock: Callable[[], float] = time.monotonic,
        quiet: float = QUIET_PERIOD,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.discovery = discovery
        self.make_snapshot = make_snapshot
        self.clock = clock
        self.debouncer = Debouncer(clock, quiet, max_delay)
        self.queue = PushQueue()
        self.stats = PushStats()
        self.revision = discovery.snapshot.revision
        self._kick = asyncio.Event()

    def trigger(self) -> None:
        """A config or registry change happened (listener callback)."""
        self.stats.triggers += 1
        self.debouncer.event()
        self._kick.set()

    def step(self) -> list[str]:
        """When the debounce is due: new snapshot, queue connected proxies, rebuild them all.
        Returns the ids of proxies whose view changed."""
        if not self.debouncer.due():
            return []
        self.snapshot_now()
        pushed = []
        while (pid := self.queue.pop()) is not None:
            if self._refresh(pid):
                pushed.append(pid)
        return pushed

    def snapshot_now(self) -> None:
        merged = self.debouncer.take()
        self.revision += 1
        self.discovery.snapshot = self.make_snapshot(self.revision)
        self.stats.snapshots += 1
        self.stats.last_snapshot_at = time.time()
        self.queue.enqueue(self.discovery.connected())
        log.debug("snapshot %d from %d change(s), %d proxies queued", self.revision, merged, len(self.queue))

    def _refresh(self, pid: str) -> bool:
        changed = self.discovery.refresh(pid)
        if changed:
            self.stats.pushes += 1
        else:
            self.stats.unchanged += 1
        return changed

    async def run(self) -> None:
        """The async driver: sleep until the debounce deadline, then snapshot and drain the queue."""
        while True:
            self._kick.clear()
            deadline = self.debouncer.deadline()
            if deadline is None:
                await self._kick.wait()
                continue
            delay = deadline - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # more events may have moved the deadline
            try:
                self.snapshot_now()
                done = 0
                while (pid := self.queue.pop()) is not None:
                    self._refresh(pid)
                    done += 1
                    if done % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            except Exception:  # a builder bug must not stop pushes for good; the next change retries
                log.exception("push failed")

    def __repr__(self) -> str:
        return f"<Pusher revision={self.revision} {self.debouncer!r} {self.queue!r} {self.stats}>"
