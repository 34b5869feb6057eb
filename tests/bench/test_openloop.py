"""The open-loop schedule and latency math (`bench.openloop`), with a fake clock: no sockets, no sleeps."""

from __future__ import annotations

import math

import pytest

from bench import openloop


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def test_schedule_hands_out_each_index_once_at_its_intended_time():
    clock = FakeClock()
    schedule = openloop.Schedule(rate=1000, duration=0.01, start=clock.now)
    assert schedule.count == 10
    assert list(schedule.due(clock.now - 0.001)) == []
    assert list(schedule.due(clock.now)) == [0]
    assert list(schedule.due(clock.now)) == []  # nothing twice
    assert list(schedule.due(clock.advance(0.0025))) == [1, 2]
    assert schedule.intended(2) == pytest.approx(100.002)


def test_a_late_tick_gets_every_overdue_index_and_the_schedule_ends():
    clock = FakeClock()
    schedule = openloop.Schedule(rate=100, duration=1.0, start=clock.now)
    assert list(schedule.due(clock.advance(0.5))) == list(range(51))
    assert not schedule.finished
    assert list(schedule.due(clock.advance(10.0))) == list(range(51, 100))
    assert schedule.finished
    assert schedule.end == pytest.approx(101.0)


def test_latency_counts_from_the_intended_time_not_the_send_time():
    """Coordinated omission: a 50 ms stall delays sends; the wait is part of each request's latency."""
    rate, n = 1000.0, 100
    schedule = openloop.Schedule(rate, n / rate, start=0.0)
    sent = [schedule.intended(i) for i in range(n)]
    completed = [t + 0.0002 for t in sent]  # 0.2 ms service time
    for i in range(10):  # the first ten were all sent at once when a 50 ms stall ended
        sent[i] = 0.05
        completed[i] = 0.05 + 0.0002
    summary = openloop.summarize(schedule, sent, completed, bytearray(b"\x01" * n), warmup_s=0.0)
    assert summary["requests"] == summary["completed"] == n
    assert summary["p50_ms"] == pytest.approx(0.2)
    assert summary["max_ms"] == pytest.approx(50.2)  # request 0: intended at 0, done at 50.2 ms
    assert summary["p99_ms"] == pytest.approx(49.2)  # rank 99 of 100: request 1, intended at 1 ms
    assert summary["send_lag_p99_ms"] == pytest.approx(49.0)


def test_warmup_is_excluded_and_failures_are_errors_not_samples():
    schedule = openloop.Schedule(rate=10, duration=2.0, start=0.0)
    sent = [schedule.intended(i) for i in range(20)]
    completed = [t + 0.001 for t in sent]
    ok = bytearray(b"\x01" * 20)
    ok[15] = 0  # a 503
    completed[16] = math.nan  # never answered
    summary = openloop.summarize(schedule, sent, completed, ok, warmup_s=1.0)
    assert summary["requests"] == 10
    assert summary["errors"] == 2
    assert summary["completed"] == 8
    assert summary["sent_total"] == 20
    assert summary["p50_ms"] == pytest.approx(1.0)
    assert summary["achieved_rps"] == pytest.approx(8 / (1.901 - 1.0))


@pytest.mark.parametrize(("q", "expected"), [(0, 1.0), (50, 5.0), (90, 9.0), (99, 10.0), (100, 10.0)])
def test_percentile_is_nearest_rank(q, expected):
    assert openloop.percentile([float(v) for v in range(1, 11)], q) == expected


def test_percentile_of_nothing_is_nan():
    assert math.isnan(openloop.percentile([], 50))
