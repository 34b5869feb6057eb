"""The soak's judgement (`bench.soak`): windows cut from one open-loop run, RSS growth, verdicts. No sockets."""

from __future__ import annotations

import math
import os

import pytest

from bench import openloop, soak


def run_of(rate: float, seconds: float, latency: float, *, failed: set[int] = frozenset(), slow: dict | None = None):
    """A finished open-loop run where request i took `latency` s (or `slow[i]`), and `failed` got errors."""
    schedule = openloop.Schedule(rate, seconds, start=1000.0)
    sent = [schedule.intended(i) for i in range(schedule.count)]
    completed = [sent[i] + (slow or {}).get(i, latency) for i in range(schedule.count)]
    ok = bytearray(0 if i in failed else 1 for i in range(schedule.count))
    return schedule, sent, completed, ok


def test_windows_skip_the_warmup_and_cover_the_rest_in_order():
    schedule, sent, completed, ok = run_of(100, 12, 0.002)
    figures = soak.windows(schedule, sent, completed, ok, warmup_s=2, window_s=5)
    assert [w["from_s"] for w in figures] == [0, 5]
    assert [w["requests"] for w in figures] == [500, 500]
    assert all(w["errors"] == 0 for w in figures)
    assert figures[0]["p99_ms"] == pytest.approx(2.0)


def test_an_error_lands_in_its_own_window_and_warmup_errors_are_not_judged():
    schedule, sent, completed, ok = run_of(100, 12, 0.002, failed={50, 900})
    figures = soak.windows(schedule, sent, completed, ok, warmup_s=2, window_s=5)
    assert [w["errors"] for w in figures] == [0, 1]  # index 50 is in the warm-up, 900 in the second window


def test_a_creeping_tail_fails_the_p99_verdict():
    slow = {i: 0.050 for i in range(1100, 1200, 5)}  # 20 slow requests in the last window
    schedule, sent, completed, ok = run_of(100, 12, 0.002, slow=slow)
    figures = soak.windows(schedule, sent, completed, ok, warmup_s=2, window_s=2)
    checks = {c["check"]: c for c in soak.verdicts(figures, {})}
    drift = checks["worst window p99 ÷ median window p99"]
    assert not drift["pass"] and drift["value"] == pytest.approx(25.0)


def test_rss_growth_is_measured_from_the_first_sample_after_the_baseline_time():
    samples = [{"t": 0.0, "proxy": (30_000, 10)}, {"t": 10.0, "proxy": (40_000, 12)},
               {"t": 20.0, "proxy": None}, {"t": 30.0, "proxy": (43_000, 12)}]
    memory = soak.rss_growth(samples, baseline_at=10.0)
    assert memory["proxy"] == {"baseline_kib": 40_000, "final_kib": 43_000, "growth": pytest.approx(0.075),
                               "baseline_fds": 12, "final_fds": 12}
    assert soak.gone(samples) == ["proxy"]  # the gap at t=20: a crash (or restart) fails the soak
    assert soak.gone([samples[0], samples[1], samples[3]]) == []
    checks = {c["check"].split(",")[0]: c for c in soak.verdicts([], memory, soak.gone(samples))}
    assert not checks["processes gone or restarted"]["pass"]
    checks = {c["check"].split(",")[0]: c for c in soak.verdicts([], memory)}
    assert checks["RSS growth"]["pass"]
    memory["proxy"]["growth"] = 0.2
    assert not {c["check"].split(",")[0]: c for c in soak.verdicts([], memory)}["RSS growth"]["pass"]


def test_no_completed_request_fails_rather_than_passing_on_nan():
    schedule, sent, completed, ok = run_of(100, 4, 0.002, failed=set(range(400)))
    figures = soak.windows(schedule, sent, completed, ok, warmup_s=0, window_s=2)
    checks = soak.verdicts(figures, {})
    assert [c["pass"] for c in checks] == [False, False, False, True]
    assert math.isnan(figures[0]["p99_ms"])


def test_read_process_sees_this_process_and_not_a_dead_pid():
    rss, fds = soak.read_process(os.getpid())
    assert rss > 1000 and fds >= 3
    assert soak.read_process(2**22 + 1) is None  # above pid_max's default ceiling
