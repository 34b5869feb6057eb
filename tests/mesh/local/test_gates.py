"""Promotion gates: the policy from stack config, and step verdicts from scraped sidecar metrics."""

from __future__ import annotations

import math

import pytest

from mesh.local import errors, gates

POLICY = gates.PromotionPolicy(min_success_rate=0.99, max_p99_ms=500, min_requests=5)


def requests(reporter: str, workload: str, counts: dict[int, int]) -> str:
    return "\n".join(
        f'istio_requests_total{{reporter="{reporter}",destination_workload="{workload}",response_code="{code}",'
        f'response_flags="-"}} {n}' for code, n in counts.items())


def histogram(buckets: dict[str, int]) -> str:
    return "\n".join(f'istio_request_duration_milliseconds_bucket{{reporter="source",destination_workload="gw-v1",'
                     f'le="{le}"}} {n}' for le, n in buckets.items())


def by_name(verdicts: list[gates.Gate]) -> dict[str, gates.Gate]:
    return {g.name: g for g in verdicts}


def test_a_failing_canary_fails_its_own_gate_though_the_ingress_mostly_succeeds() -> None:
    before = {"ratings-v2": "", "ratings-v1": "", gates.INGRESS: ""}
    after = {
        "ratings-v2": requests("destination", "ratings-v2", {200: 2, 500: 19}),
        "ratings-v1": requests("destination", "ratings-v1", {200: 179}),
        gates.INGRESS: requests("source", "gw-v1", {200: 181, 500: 19})
        + "\n" + histogram({"10": 150, "50": 198, "100": 200, "+Inf": 200}),
    }
    verdicts = by_name(gates.evaluate(POLICY, before, after))
    assert not verdicts["success-rate ratings-v2"].passed
    assert "saw 9.52% of 21" in verdicts["success-rate ratings-v2"].detail
    assert verdicts["success-rate ratings-v1"].passed
    assert not verdicts[f"success-rate {gates.INGRESS}"].passed  # 90.5 % < 99 %
    assert verdicts[f"p99 {gates.INGRESS}"].passed


def test_only_growth_between_the_scrapes_counts() -> None:
    before = {"books-v1": requests("destination", "books-v1", {200: 100, 503: 50})}
    after = {"books-v1": requests("destination", "books-v1", {200: 130, 503: 50})}
    (verdict,) = gates.evaluate(POLICY, before, after)
    assert verdict.passed and "saw 100.00% of 30" in verdict.detail


def test_a_workload_with_too_few_requests_is_not_judged_and_source_reports_are_not_its_own() -> None:
    after = {"books-v2": requests("destination", "books-v2", {500: 4}) + "\n"
             + requests("source", "ratings-v1", {500: 100})}
    assert gates.evaluate(POLICY, {}, after) == []


def test_p99_over_the_threshold_fails_and_no_traffic_at_the_ingress_fails() -> None:
    slow = histogram({"100": 50, "1000": 100, "+Inf": 100})
    verdicts = by_name(gates.evaluate(POLICY, {gates.INGRESS: ""}, {gates.INGRESS: slow}))
    assert not verdicts[f"p99 {gates.INGRESS}"].passed and "saw 982.0 ms" in verdicts[f"p99 {gates.INGRESS}"].detail
    quiet = by_name(gates.evaluate(POLICY, {gates.INGRESS: ""}, {gates.INGRESS: ""}))
    assert not quiet[f"p99 {gates.INGRESS}"].passed and "no requests" in quiet[f"p99 {gates.INGRESS}"].detail
    assert not quiet[f"success-rate {gates.INGRESS}"].passed


@pytest.mark.parametrize(("q", "buckets", "expected"), [
    (0.5, {10.0: 50, 20.0: 100, math.inf: 100}, 10.0),
    (0.75, {10.0: 50, 20.0: 100, math.inf: 100}, 15.0),  # linear inside the bucket, as Prometheus
    (0.99, {10.0: 50, 20.0: 90, math.inf: 100}, 20.0),  # above the last finite bound: that bound
    (0.5, {}, math.nan),
])
def test_histogram_quantile_matches_prometheus(q: float, buckets: dict, expected: float) -> None:
    got = gates.histogram_quantile(q, buckets)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_policy_defaults_and_a_full_policy() -> None:
    assert gates.parse_policy(None, "s") == gates.PromotionPolicy()
    policy = gates.parse_policy({"steps": [25, 100], "hold": "1m", "requestRate": 5, "minSuccessRate": 0.95,
                                 "maxP99Ms": 250, "minRequests": 3, "requireApproval": True}, "s")
    assert policy == gates.PromotionPolicy((25, 100), 60.0, 5.0, 0.95, 250.0, 3, True)


@pytest.mark.parametrize(("raw", "says"), [
    ({"steps": [50, 10, 100]}, "`weir:promotion.steps`"),
    ({"steps": [10, 50]}, "ending at 100"),
    ({"steps": [0, 100]}, "`weir:promotion.steps`"),
    ({"hold": "soon"}, "`weir:promotion.hold`"),
    ({"minSuccessRate": 1.5}, "`weir:promotion.minSuccessRate` must be a number in [0, 1]"),
    ({"requireApproval": "yes"}, "true or false"),
    ({"stepz": [100]}, "`weir:promotion.stepz` is unknown"),
    ([10, 100], "must be a mapping"),
])
def test_bad_policies_name_the_key(raw, says: str) -> None:
    with pytest.raises(errors.StackError, match=None) as err:
        gates.parse_policy(raw, "Pulumi.staging.yaml")
    assert says in str(err.value) and str(err.value).startswith("Pulumi.staging.yaml: ")


def test_buckets_that_did_not_grow_still_bound_the_quantile() -> None:
    """As Prometheus: all 40 requests in (10, 25] put the median at 17.5, not at 12.5 as if the bucket
    started at 0 (a bucket with no growth is still a bucket)."""
    before = histogram({"10": 5, "25": 5, "+Inf": 5})
    after = histogram({"10": 5, "25": 45, "+Inf": 45})
    assert gates.quantile_growth(0.5, before, after, reporter="source") == 17.5
