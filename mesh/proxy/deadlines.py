"""Per-request deadlines (route and per-try timeouts) without an event-loop timer per request.

Every exchange with a timeout needs a deadline, and almost every deadline is cancelled because the
answer came first. One `loop.call_later` + `cancel()` per request costs the hot path a few
microseconds; here a deadline is a heap entry, cancelling only flags it, and a single loop timer wakes
for the earliest live deadline (uvicorn keeps one rescheduled timer per connection for the same reason).

Example: 1000 requests/s with a 3 s route timeout keep about 3000 entries in the heap; each request
costs one `heappush`, and the loop timer fires once per due deadline batch, not per request.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class Deadline:
    """Like asyncio.TimerHandle for our purposes: `cancel()` and nothing else."""

    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = None  # the entry may sit in the heap until its time: don't keep the exchange alive
        self.args = ()


class Deadlines:
    __slots__ = ("owner", "heap", "seq", "timer", "timer_at")

    def __init__(self, owner: Any) -> None:
        self.owner = owner  # anything with a `loop` (time, call_later)
        self.heap: list[tuple[float, int, Deadline]] = []
        self.seq = itertools.count()
        self.timer = None
        self.timer_at = 0.0

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Deadline:
        when = self.owner.loop.time() + delay
        deadline = Deadline(when, callback, args)
        heapq.heappush(self.heap, (when, next(self.seq), deadline))
        if self.timer is None or when < self.timer_at:
            self._arm(when)
        return deadline

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = when
        loop = self.owner.loop
        self.timer = loop.call_later(max(0.0, when - loop.time()), self._fire)

    def _fire(self) -> None:
        self.timer = None
        now = self.owner.loop.time()
        heap = self.heap
        while heap and heap[0][0] <= now:
            _, _, deadline = heapq.heappop(heap)
            if not deadline.cancelled:
                deadline.cancelled = True
                deadline.callback(*deadline.args)
        while heap and heap[0][2].cancelled:  # don't wake up for deadlines nobody waits on
            heapq.heappop(heap)
        if heap and self.timer is None:
            self._arm(heap[0][0])

    def __len__(self) -> int:
        return len(self.heap)
