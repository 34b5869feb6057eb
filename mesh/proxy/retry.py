"""Retry eligibility and backoff: Envoy's router retry policy, as Istio configures it.

Pure functions over a `mesh.view.model.RetryPolicy`; `mesh.proxy.retrying` asks them after each failed
try and does the I/O. Semantics (Envoy `x-envoy-retry-on`):
- `5xx`: any 5xx answer, and no answer at all (connect failure, reset, per-try timeout);
- `gateway-error`: 502, 503, 504, and no answer at all;
- `reset`: no answer (connection reset or closed, per-try timeout);
- `connect-failure`: the connection could not be opened;
- `retriable-4xx`: 409; `retriable-status-codes`: the codes listed in the policy.
Backoff is Envoy's full jitter: retry N waits uniform(0, min(max, (2^N - 1) × base)).

Example: Istio's default policy (no `retries` on the route) is 2 retries on connect-failure and 503; a
503 answer is retried after U(0, 25 ms), then after U(0, 75 ms), then passed to the client (flag URX).
"""

from __future__ import annotations

import random

from mesh.view import model

CONNECT_FAILURE = "connect-failure"
RESET = "reset"
PER_TRY_TIMEOUT = "per-try-timeout"

# Which retry_on names cover a try that got no answer, by how it failed.
_NO_ANSWER = {
    CONNECT_FAILURE: frozenset({"connect-failure", "5xx", "gateway-error", "reset"}),
    RESET: frozenset({"reset", "5xx", "gateway-error"}),
    PER_TRY_TIMEOUT: frozenset({"reset", "5xx", "gateway-error"}),
}
GATEWAY_ERRORS = frozenset({502, 503, 504})


def failure_is_retriable(policy: model.RetryPolicy, failure: str) -> bool:
    return policy.attempts > 0 and not _NO_ANSWER[failure].isdisjoint(policy.retry_on)


def status_is_retriable(policy: model.RetryPolicy, status: int) -> bool:
    if policy.attempts <= 0 or status < 400:
        return False
    on = policy.retry_on
    return (
        (status >= 500 and "5xx" in on)
        or (status in GATEWAY_ERRORS and "gateway-error" in on)
        or (status == 409 and "retriable-4xx" in on)
        or (status in policy.retriable_status and "retriable-status-codes" in on)
    )


def backoff(policy: model.RetryPolicy, retry_number: int, rng: random.Random) -> float:
    """Seconds to wait before retry `retry_number` (1 for the first retry)."""
    ceiling = min(policy.backoff_max_s, ((1 << retry_number) - 1) * policy.backoff_base_s)
    return rng.random() * ceiling
