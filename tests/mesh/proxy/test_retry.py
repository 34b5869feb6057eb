"""Retry eligibility, backoff and fault decisions: pure functions, seeded RNG."""

from __future__ import annotations

import random

import pytest

from mesh.proxy import fault, retry
from mesh.view import model

DEFAULT = model.DEFAULT_RETRIES


@pytest.mark.parametrize(("retry_on", "failure", "expected"), [
    (model.DEFAULT_RETRY_ON, retry.CONNECT_FAILURE, True),
    (model.DEFAULT_RETRY_ON, retry.RESET, False),  # Istio's default does not retry resets
    (model.DEFAULT_RETRY_ON, retry.PER_TRY_TIMEOUT, False),
    (("5xx",), retry.RESET, True),
    (("5xx",), retry.PER_TRY_TIMEOUT, True),
    (("gateway-error",), retry.CONNECT_FAILURE, True),
    (("reset",), retry.PER_TRY_TIMEOUT, True),
    (("retriable-4xx",), retry.CONNECT_FAILURE, False),
])
def test_failures(retry_on, failure, expected):
    assert retry.failure_is_retriable(model.RetryPolicy(retry_on=retry_on), failure) is expected


@pytest.mark.parametrize(("retry_on", "codes", "status", "expected"), [
    (model.DEFAULT_RETRY_ON, (503,), 503, True),
    (model.DEFAULT_RETRY_ON, (503,), 500, False),
    (("5xx",), (), 500, True),
    (("5xx",), (), 404, False),
    (("gateway-error",), (), 504, True),
    (("gateway-error",), (), 500, False),
    (("retriable-4xx",), (), 409, True),
    (("retriable-status-codes",), (429,), 429, True),
    (("5xx",), (), 200, False),
])
def test_statuses(retry_on, codes, status, expected):
    policy = model.RetryPolicy(retry_on=retry_on, retriable_status=codes)
    assert retry.status_is_retriable(policy, status) is expected


def test_attempts_zero_disables_everything():
    off = model.RetryPolicy(attempts=0, retry_on=("5xx",))
    assert not retry.failure_is_retriable(off, retry.CONNECT_FAILURE)
    assert not retry.status_is_retriable(off, 503)


@pytest.mark.parametrize(("policy", "ceilings"), [
    (DEFAULT, ((1, 0.025), (2, 0.075), (3, 0.175), (4, 0.25), (9, 0.25))),
    # `retries.backoff: 100ms`: base 0.1 s, cap ten times that
    (model.RetryPolicy(backoff_base_s=0.1, backoff_max_s=1.0), ((1, 0.1), (2, 0.3), (3, 0.7), (4, 1.0))),
])
def test_backoff_is_full_jitter_under_a_growing_capped_ceiling(policy, ceilings):
    rng = random.Random(3)
    for number, ceiling in ceilings:
        waits = [retry.backoff(policy, number, rng) for _ in range(2000)]
        assert 0 <= min(waits) and max(waits) <= ceiling
        assert max(waits) > 0.9 * ceiling and min(waits) < 0.1 * ceiling


@pytest.mark.parametrize(("spec", "n", "delays", "aborts"), [
    (model.Fault(delay_s=2.0, delay_percent=100), 1000, 1000, 0),
    (model.Fault(delay_s=2.0, delay_percent=0), 1000, 0, 0),  # no percentage: never injected
    (model.Fault(abort_status=503, abort_percent=10), 10000, 0, 1000),
    (model.Fault(delay_s=1.0, delay_percent=50, abort_status=500, abort_percent=50), 10000, 5000, 5000),
])
def test_fault_percentages_within_a_band(spec, n, delays, aborts):
    rng = random.Random(11)
    decisions = [fault.decide(spec, rng) for _ in range(n)]
    seen_delays = sum(d is not None for d, _ in decisions)
    seen_aborts = sum(a is not None for _, a in decisions)
    assert abs(seen_delays - delays) <= 4 * max(1.0, (n * 0.25) ** 0.5)
    assert abs(seen_aborts - aborts) <= 4 * max(1.0, (n * 0.25) ** 0.5)
