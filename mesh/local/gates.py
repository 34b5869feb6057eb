"""Promotion gates: the stack's promotion policy, and the verdict of one step from the target's own sidecar
metrics. Pure: scraped Prometheus text in, verdicts out (mesh.local.promotion does the I/O).

The policy is the stack's `weir:promotion` (every key optional)::

    weir:promotion:
      steps: [10, 50, 100]     # % of traffic on the new release at each step; rising, ending at 100
      hold: 10s                # traffic is sent and watched this long at each step
      requestRate: 20          # requests per second sent through the target's ingress while holding
      minSuccessRate: 0.99     # each workload that served >= minRequests in the step, and the ingress
      maxP99Ms: 1000           # p99 at the ingress during the step (from its duration histogram)
      minRequests: 5           # a workload with fewer requests in the step is not judged
      requireApproval: false   # true: `meshctl promote` refuses without --approve (prod)

Success rate is Istio's: responses that are not 5xx over all responses, counted from
`istio_requests_total{reporter="destination"}` growth on each workload's sidecar (what each workload served,
so a failing canary that gets 10 % of the calls fails its own gate) and `{reporter="source"}` on the
ingress gateway (what clients saw). p99 follows Prometheus' `histogram_quantile` over the growth of the
ingress' `istio_request_duration_milliseconds_bucket`: linear within the bucket that holds the rank.

Worked example: a step sends 200 requests; ratings-v2 (the canary, 10 %) answered 19 of its 21 with 500:
its success rate is 2/21 = 0.095 < 0.99, so the gate `success-rate ratings-v2` fails and the step rolls back.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.control import exposition
from mesh.control.dashboard import metrics
from mesh.local import errors

REQUESTS = "istio_requests_total"
BUCKETS = "istio_request_duration_milliseconds_bucket"
INGRESS = "istio-ingressgateway"


@dataclass(frozen=True, slots=True)
class PromotionPolicy:
    steps: tuple[int, ...] = (10, 50, 100)
    hold_s: float = 10.0
    request_rate: float = 20.0
    min_success_rate: float = 0.99
    max_p99_ms: float = 1000.0
    min_requests: int = 5
    require_approval: bool = False


@dataclass(frozen=True, slots=True)
class Gate:
    name: str  # "success-rate ratings-v2", "p99 istio-ingressgateway"
    passed: bool
    detail: str  # expected and seen

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def parse_policy(raw: Any, source: str) -> PromotionPolicy:
    """`weir:promotion` → PromotionPolicy; StackError naming the key when a value is wrong."""
    if raw is None:
        return PromotionPolicy()
    key = "weir:promotion"
    if not isinstance(raw, dict):
        raise errors.StackError(f"{source}: key `{key}` must be a mapping, got {raw!r}")
    known = {"steps", "hold", "requestRate", "minSuccessRate", "maxP99Ms", "minRequests", "requireApproval"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise errors.StackError(f"{source}: key `{key}.{unknown[0]}` is unknown (known: {', '.join(sorted(known))})")

    def bad(field: str, expected: str) -> errors.StackError:
        return errors.StackError(f"{source}: key `{key}.{field}` must be {expected}, got {raw[field]!r}")

    default = PromotionPolicy()
    steps = raw.get("steps", list(default.steps))
    if (not isinstance(steps, list) or not steps or steps[-1] != 100
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100 for s in steps)
            or any(a >= b for a, b in zip(steps, steps[1:], strict=False))):
        raise bad("steps", "rising whole percentages in 1-100 ending at 100, e.g. [10, 50, 100]")
    hold = default.hold_s
    if "hold" in raw:
        from mesh.api.types import parse_duration  # the one duration syntax; mesh.api loads slowly

        try:
            hold = parse_duration(raw["hold"])
        except ValueError:
            hold = -1.0
        if hold <= 0:
            raise bad("hold", "a positive duration such as 10s or 1m")

    def number(field: str, low: float, high: float, fallback: float) -> float:
        value = raw.get(field, fallback)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise bad(field, f"a number in [{low}, {high}]")
        return float(value)

    approval = raw.get("requireApproval", False)
    if not isinstance(approval, bool):
        raise bad("requireApproval", "true or false")
    return PromotionPolicy(
        steps=tuple(steps), hold_s=hold,
        request_rate=number("requestRate", 0.1, 1000, default.request_rate),
        min_success_rate=number("minSuccessRate", 0, 1, default.min_success_rate),
        max_p99_ms=number("maxP99Ms", 1, 600_000, default.max_p99_ms),
        min_requests=int(number("minRequests", 1, 1_000_000, default.min_requests)),
        require_approval=approval,
    )


def growth(before: str, after: str, name: str, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Per label set, how much the counters `name` matching `match` grew between two scrapes: 0 for a series
    that did not grow (histogram_quantile needs the empty buckets below the rank for their bounds), none for
    one that shrank (its proxy restarted: its counters started again)."""

    def totals(text: str) -> dict[tuple[tuple[str, str], ...], float]:
        out: dict[tuple[tuple[str, str], ...], float] = defaultdict(float)
        for sample, labels, value in exposition.samples(text):
            if sample == name and all(labels.get(k) == v for k, v in match.items()):
                out[tuple(sorted(labels.items()))] += value
        return out

    old, new = totals(before), totals(after)
    return {labels: value - old.get(labels, 0.0) for labels, value in new.items() if value >= old.get(labels, 0.0)}


def success(before: str, after: str, **match: str) -> tuple[float, float]:
    """(requests, non-5xx) grown between the scrapes."""
    total = ok = 0.0
    for labels, grown in growth(before, after, REQUESTS, **match).items():
        total += grown
        if not dict(labels).get("response_code", "").startswith("5"):
            ok += grown
    return total, ok


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus' histogram_quantile over cumulative bucket counts {upper bound: count}; NaN when empty.
    The one implementation is the dashboard's (mesh.control.dashboard.metrics.quantile)."""
    value = metrics.quantile(q, tuple(sorted(buckets.items())))
    return math.nan if value is None else value


def quantile_growth(q: float, before: str, after: str, **match: str) -> float:
    """The q-quantile (ms) of the requests matching `match` between two scrapes: Prometheus'
    `histogram_quantile(q, sum by (le) (increase(istio_request_duration_milliseconds_bucket[...])))`."""
    buckets: dict[float, float] = defaultdict(float)
    for labels, grown in growth(before, after, BUCKETS, **match).items():
        buckets[float(dict(labels)["le"])] += grown
    return histogram_quantile(q, buckets)


def evaluate(policy: PromotionPolicy, before: Mapping[str, str], after: Mapping[str, str]) -> list[Gate]:
    """The gates of one step from each workload's stats text scraped before and after it (workload → text;
    the ingress under "istio-ingressgateway")."""
    gates = []
    for workload in sorted(after):
        if workload == INGRESS:
            total, ok = success(before.get(workload, ""), after[workload], reporter="source")
        else:
            total, ok = success(before.get(workload, ""), after[workload], reporter="destination")
        judged = total >= policy.min_requests or (workload == INGRESS)
        if not judged:
            continue
        rate = ok / total if total else 0.0
        gates.append(Gate(f"success-rate {workload}", total > 0 and rate >= policy.min_success_rate,
                          f"expected >= {policy.min_success_rate:.2%} of responses not 5xx, "
                          f"saw {rate:.2%} of {total:.0f}"))
    if INGRESS in after:
        p99 = quantile_growth(0.99, before.get(INGRESS, ""), after[INGRESS], reporter="source")
        gates.append(Gate(f"p99 {INGRESS}", not math.isnan(p99) and p99 <= policy.max_p99_ms,
                          f"expected p99 <= {policy.max_p99_ms:g} ms, saw "
                          + ("no requests" if math.isnan(p99) else f"{p99:.1f} ms")))
    return gates
