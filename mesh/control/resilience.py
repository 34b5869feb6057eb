"""An Istio http rule's `timeout`, `retries` and `fault` → the view's `timeout_s`, `RetryPolicy` and `Fault`.

Follows Istio's translation to Envoy (pilot's retry and fault conversion):
- `timeout` unset or `0s`: no route timeout.
- `retries` unset: Istio's default policy (`model.DEFAULT_RETRIES`); `attempts: 0` (or unset inside a
  `retries` block) disables retries altogether, per-try timeout included; `retryOn` unset keeps the
  default conditions and 503; a set `retryOn` replaces both: names are conditions, numbers are
  retriable status codes (and add `retriable-status-codes`).
- `fault`: a delay or abort with neither `percentage` nor the deprecated integer `percent` is injected
  0% of the time. gRPC-status and HTTP/2-error aborts are not executed (`abort_status` None); a fault left
  with nothing Weir executes is dropped.
"""

from __future__ import annotations

from typing import Any

from mesh.view import model

RETRIABLE_STATUS_CODES = "retriable-status-codes"
NO_RETRIES = model.RetryPolicy(attempts=0)


def timeout_seconds(timeout: Any) -> float | None:
    """A route timeout in seconds; None when unset or `0s` (disabled)."""
    if timeout is None or timeout.seconds <= 0:
        return None
    return timeout.seconds


def retry_policy(retries: Any) -> model.RetryPolicy:
    if retries is None:
        return model.DEFAULT_RETRIES
    if not retries.attempts:
        return NO_RETRIES
    per_try = retries.per_try_timeout.seconds if retries.per_try_timeout is not None else None
    if not (retries.retry_on or "").strip():
        return model.RetryPolicy(attempts=retries.attempts, per_try_timeout_s=per_try)
    retry_on, codes = parse_retry_on(retries.retry_on)
    return model.RetryPolicy(
        attempts=retries.attempts, per_try_timeout_s=per_try, retry_on=retry_on, retriable_status=codes
    )


def parse_retry_on(text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """`"5xx, 503,reset"` → (("5xx", "reset", "retriable-status-codes"), (503,)); order kept, no duplicates."""
    names: list[str] = []
    codes: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.isdigit():
            if int(item) not in codes:
                codes.append(int(item))
        elif item not in names:
            names.append(item)
    if codes and RETRIABLE_STATUS_CODES not in names:
        names.append(RETRIABLE_STATUS_CODES)
    return tuple(names), tuple(codes)


def fault(spec: Any) -> model.Fault | None:
    if spec is None:
        return None
    delay_s = abort_status = None
    delay_percent = abort_percent = 0.0
    if spec.delay is not None and spec.delay.fixed_delay is not None:
        delay_s = spec.delay.fixed_delay.seconds
        delay_percent = _percent(spec.delay)
    if spec.abort is not None and spec.abort.http_status is not None:
        abort_status = spec.abort.http_status
        abort_percent = _percent(spec.abort)
    if delay_s is None and abort_status is None:
        return None  # only exponential delays or gRPC/HTTP2 aborts: nothing Weir executes
    return model.Fault(
        delay_s=delay_s, delay_percent=delay_percent, abort_status=abort_status, abort_percent=abort_percent
    )


def _percent(part: Any) -> float:
    """`percentage.value`, else the deprecated integer `percent` (delay only), else 0: never injected."""
    if part.percentage is not None:
        return float(part.percentage.value)
    return float(getattr(part, "percent", None) or 0)
