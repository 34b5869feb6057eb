"""Per-request deadlines (route and per-try timeouts) without an event-loop timer per request.

Every exchange with a timeout needs a deadline, and almost every deadline is cancelled because the
answer came first. One `loop.call_later` + `cancel()` per request costs the hot path a few
microseconds; here a deadline is a heap entry, cancelling only flags it, and a single loop timer wakes
for the earliest live deadline (uvicorn keeps one rescheduled timer per connection for the same reason).

A cancelled entry stays in the heap until its time comes, or until cancelled entries are more than half
of the heap (and at least MIN_COMPACT_CANCELLED): then the heap is rebuilt from its live entries, as
asyncio's own loop does with its timer handles. So the heap holds at most about twice the deadlines in
flight, whatever the rate and the timeout.

Example: 20,000 requests/s with a 3 s route timeout, each answered in a millisecond. Without the rebuild the
heap would hold 60,000 entries, all cancelled but the twenty in flight; with it, it is rebuilt each time
MIN_COMPACT_CANCELLED more cancellations come in (every 5 ms here), an O(n) pass over ~100 entries. Each
request costs one `heappush` and one counted cancel; the loop timer fires once per due batch, not per request.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

# Cancelled entries tolerated before the heap is rebuilt (and more than half of it must be cancelled): a
# small heap is never worth the pass.
MIN_COMPACT_CANCELLED = 100


class Deadline:
    """Like asyncio.TimerHandle for our purposes: `cancel()` and nothing else."""

    __slots__ = ("when", "callback", "args", "cancelled", "deadlines")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple, deadlines: Deadlines) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self.deadlines: Deadlines | None = deadlines  # while its entry is in the heap

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = None  # the entry may sit in the heap until its time: don't keep the exchange alive
        self.args = ()
        deadlines = self.deadlines
        if deadlines is not None:
            self.deadlines = None
            deadlines.cancelled_in_heap += 1
            if deadlines.cancelled_in_heap >= MIN_COMPACT_CANCELLED and (
                    deadlines.cancelled_in_heap * 2 > len(deadlines.heap)):
                deadlines.compact()


class Deadlines:
    __slots__ = ("owner", "heap", "seq", "timer", "timer_at", "cancelled_in_heap")

    def __init__(self, owner: Any) -> None:
        self.owner = owner  # anything with a `loop` (time, call_later)
        self.heap: list[tuple[float, int, Deadline]] = []
        self.seq = itertools.count()
        self.timer = None
        self.timer_at = 0.0
        self.cancelled_in_heap = 0  # entries whose deadline was cancelled and that are still in the heap

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Deadline:
        when = self.owner.loop.time() + delay
        deadline = Deadline(when, callback, args, self)
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
            if deadline.cancelled:
                self.cancelled_in_heap -= 1
            else:
                deadline.cancelled = True
                deadline.deadlines = None
                deadline.callback(*deadline.args)
        while heap and heap[0][2].cancelled:  # don't wake up for deadlines nobody waits on
            heapq.heappop(heap)
            self.cancelled_in_heap -= 1
        # A callback may have armed the timer for a deadline it added, later than one still waiting.
        if heap and (self.timer is None or heap[0][0] < self.timer_at):
            self._arm(heap[0][0])

    def compact(self) -> None:
        """Drop the cancelled entries, in place (a `_fire` running a callback that cancels holds the list);
        the loop timer stays as armed: at worst it wakes early, finds nothing due and re-arms."""
        heap = self.heap
        heap[:] = [entry for entry in heap if not entry[2].cancelled]
        heapq.heapify(heap)
        self.cancelled_in_heap = 0

    def __len__(self) -> int:
        return len(self.heap)
