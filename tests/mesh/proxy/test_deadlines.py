"""Coarse per-request deadlines on a fake loop: order, cancellation, one loop timer at a time."""

from __future__ import annotations

from types import SimpleNamespace

from mesh.proxy import deadlines
from tests.mesh.proxy.fakes import FakeTimer


class Loop:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay, callback, *args):
        timer = FakeTimer(self.now + delay, callback, args)
        self.timers.append(timer)
        return timer

    def run_until(self, when: float) -> None:
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= when]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = timer.when
            timer.callback(*timer.args)
        self.now = when


def setup():
    loop = Loop()
    return loop, deadlines.Deadlines(SimpleNamespace(loop=loop))


def test_deadlines_fire_in_order_and_cancelled_ones_never():
    loop, d = setup()
    fired = []
    d.call_later(3.0, fired.append, "c")
    b = d.call_later(2.0, fired.append, "b")
    d.call_later(1.0, fired.append, "a")
    b.cancel()
    loop.run_until(10.0)
    assert fired == ["a", "c"]


def test_one_loop_timer_armed_for_the_earliest_live_deadline():
    loop, d = setup()
    for i in range(100):
        d.call_later(5.0 + i / 1000, lambda: None).cancel()
    assert len([t for t in loop.timers if not t.cancelled]) == 1
    loop.run_until(6.0)  # all cancelled: nothing fires and nothing stays armed
    assert len(d) == 0 and not [t for t in loop.timers if not t.cancelled]


def test_an_earlier_deadline_rearms_the_timer():
    loop, d = setup()
    fired = []
    d.call_later(10.0, fired.append, "late")
    d.call_later(1.0, fired.append, "early")
    loop.run_until(1.5)
    assert fired == ["early"]
    loop.run_until(11.0)
    assert fired == ["early", "late"]


def test_a_cancelled_deadline_keeps_nothing_alive():
    import gc
    import weakref

    loop, d = setup()

    class Exchange:
        pass

    exchange = Exchange()
    ref = weakref.ref(exchange)
    d.call_later(5.0, lambda e: None, exchange).cancel()
    del exchange
    gc.collect()
    assert ref() is None and len(d) == 1  # still queued until its time, but holding nothing


def test_cancelled_entries_are_dropped_once_they_are_most_of_the_heap():
    """A busy proxy: each request's deadline cancelled as its answer comes. The heap stays about twice the
    deadlines in flight instead of growing with rate × timeout, and the live ones still fire, in order."""
    loop, d = setup()
    fired = []
    live = [d.call_later(100.0 + i, fired.append, i) for i in range(10)]
    for i in range(10_000):
        loop.now = i / 1000  # 1000 requests/s, a 3 s timeout, each answered at once
        d.call_later(3.0, fired.append, "never").cancel()
        assert len(d) <= 2 * len(live) + 2 * deadlines.MIN_COMPACT_CANCELLED
    assert d.cancelled_in_heap < deadlines.MIN_COMPACT_CANCELLED
    loop.run_until(200.0)
    assert fired == list(range(10)) and len(d) == 0 and d.cancelled_in_heap == 0


def test_a_callback_that_cancels_others_while_firing_leaves_a_consistent_heap():
    loop, d = setup()
    fired = []
    later = [d.call_later(2.0 + i / 1000, fired.append, i) for i in range(deadlines.MIN_COMPACT_CANCELLED * 3)]

    def cancel_all() -> None:  # a route timeout cancelling its tries' deadlines, enough to compact mid-fire
        fired.append("first")
        for deadline in later[1:]:
            deadline.cancel()

    d.call_later(1.0, cancel_all)
    d.call_later(1.0, fired.append, "second")  # due in the same batch, popped after the compaction
    loop.run_until(10.0)
    assert fired == ["first", "second", 0] and len(d) == 0 and d.cancelled_in_heap == 0


def test_a_callback_adding_a_later_deadline_does_not_delay_an_earlier_one():
    """A per-try timeout starts the next try's deadline (3 s on); another request's, due at 1.5, must still
    fire at 1.5, not when the timer armed for the new one wakes."""
    loop, d = setup()
    fired = []

    def next_try() -> None:
        fired.append(("retry", loop.now))
        d.call_later(3.0, fired.append, ("try2", 4.0))

    d.call_later(1.0, next_try)
    d.call_later(1.5, lambda: fired.append(("other", loop.now)))
    loop.run_until(10.0)
    assert fired == [("retry", 1.0), ("other", 1.5), ("try2", 4.0)]
