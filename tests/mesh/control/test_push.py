"""Debounce (quiet period, max delay), per-proxy coalescing and no push for an unchanged view — fake clock."""

from __future__ import annotations

from mesh.control import discovery, node, push
from tests.mesh.control.fakes import FakeBuilder, FakeClock, FakeSnapshot


def test_debounce_waits_for_a_quiet_period():
    clock = FakeClock()
    d = push.Debouncer(clock, quiet=0.1, max_delay=0.5)
    assert not d.due() and d.deadline() is None
    d.event()
    clock.advance(0.05)
    d.event()
    clock.advance(0.09)
    assert not d.due()
    clock.advance(0.01)
    assert d.due() and d.take() == 2 and not d.due()


def test_debounce_max_delay_bounds_a_stream_of_changes():
    clock = FakeClock()
    d = push.Debouncer(clock, quiet=0.1, max_delay=0.5)
    for _ in range(9):
        d.event()
        clock.advance(0.05)
        assert not d.due()
    d.event()  # t = 0.45
    clock.advance(0.0501)  # (float steps: just past 0.5)
    assert d.due()  # 0.5 after the first event, although the last one was 0.05 ago


def test_push_queue_merges_pending_proxies():
    q = push.PushQueue()
    q.enqueue(["a", "b"])
    q.enqueue(["a", "c"])
    assert len(q) == 3 and [q.pop(), q.pop(), q.pop(), q.pop()] == ["a", "b", "c", None]


def setup(proxies=("a", "b")):
    clock = FakeClock()
    build = FakeBuilder()
    snaps = {"routes": ("9080",)}
    disco = discovery.Discovery(FakeSnapshot(0, snaps["routes"]), build, clock)
    pusher = push.Pusher(disco, lambda rev: FakeSnapshot(rev, snaps["routes"]), clock, 0.1, 0.5)
    for pid in proxies:
        disco.on_request(node.make_node(pid), "", "", None)
    return clock, build, disco, pusher, snaps


def test_changes_coalesce_into_one_rebuild_per_proxy():
    clock, build, disco, pusher, snaps = setup()
    build.calls.clear()
    snaps["routes"] = ("9080", "8080")
    for _ in range(5):
        pusher.trigger()
        clock.advance(0.02)
    assert pusher.step() == []  # still inside the quiet period
    clock.advance(0.1)
    assert pusher.step() == ["a", "b"]
    assert build.calls == [(1, "a"), (1, "b")]
    assert pusher.stats.snapshots == 1 and pusher.stats.triggers == 5 and pusher.stats.pushes == 2
    assert [t.name for t in disco.proxies["a"].view.route_tables] == ["9080", "8080"]


def test_unchanged_view_is_not_pushed():
    clock, build, disco, pusher, _ = setup(("a",))
    state = disco.proxies["a"]
    version, wakeup = state.version, state.wakeup
    pusher.trigger()
    clock.advance(1)
    assert pusher.step() == []
    assert pusher.stats.unchanged == 1 and state.version == version and not wakeup.is_set()


def test_disconnected_proxies_are_not_rebuilt():
    clock, build, disco, pusher, snaps = setup(("a",))
    clock.advance(discovery.DISCONNECTED_AFTER + 1)
    build.calls.clear()
    snaps["routes"] = ()
    pusher.trigger()
    clock.advance(1)
    assert pusher.step() == [] and build.calls == []
    # on its next request it is rebuilt from the current snapshot
    disco.on_request(node.make_node("a"), "", "", None)
    assert build.calls == [(1, "a")]
