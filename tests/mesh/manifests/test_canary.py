"""Progressive traffic shifting: blends of two routing releases validate, split shares, and note the rest."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mesh.api
from mesh.manifests import canary, releases

ROOT = Path(__file__).resolve().parents[3]
STORE = releases.ReleaseStore(ROOT)
RELEASES = {r.ref: r.resources for r in STORE.list()}


def release(name: str) -> tuple[dict, ...]:
    return STORE.latest(name).resources


def find(resources, key: str) -> dict:
    (found,) = [r for r in resources if releases.resource_key(r) == key]
    return found


def virtual_service(name: str, *rules: dict) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "bookinfo"},
            "spec": {"hosts": [name], "http": list(rules)}}


def to(subset: str, weight: int | None = None) -> dict:
    entry = {"destination": {"host": "ratings", "subset": subset}}
    return entry if weight is None else entry | {"weight": weight}


def shares(route: list[dict]) -> dict[str, float]:
    total = sum(e.get("weight", 100) for e in route)
    return {e["destination"]["subset"]: e.get("weight", 100) / total for e in route}


@pytest.mark.parametrize("percent", [10, 50, 90])
@pytest.mark.parametrize(("old", "new"), list(itertools.permutations(sorted(RELEASES), 2)))
def test_every_blend_of_two_releases_validates(old: str, new: str, percent: int) -> None:
    blend = canary.blend(RELEASES[old], RELEASES[new], percent)
    keys = [releases.resource_key(r) for r in blend.resources]
    assert len(keys) == len(set(keys))
    assert set(keys) == {releases.resource_key(r) for r in RELEASES[old] + RELEASES[new]}
    for resource in blend.resources:
        mesh.api.load_document(resource, "blend")


def test_ten_percent_of_ratings_50_sends_a_twentieth_of_ratings_to_v2() -> None:
    blend = canary.blend(release("all-v1"), release("ratings-50"), 10)
    route = find(blend.resources, "VirtualService/bookinfo/ratings")["spec"]["http"][0]["route"]
    assert route == [to("v1", 950), to("v2", 50)]
    assert shares(route) == pytest.approx({"v1": 0.95, "v2": 0.05})
    assert blend.notes == ()


def test_blending_back_moves_the_other_way() -> None:
    route = canary.blend(release("ratings-10-90"), release("all-v1"), 50).resources
    http = find(route, "VirtualService/bookinfo/ratings")["spec"]["http"][0]["route"]
    assert shares(http) == pytest.approx({"v1": 0.55, "v2": 0.45})


def test_mirroring_only_in_new_is_mirrored_at_the_step_percentage() -> None:
    blend = canary.blend(release("all-v1"), release("mirroring"), 50)
    rule = find(blend.resources, "VirtualService/bookinfo/ratings")["spec"]["http"][0]
    assert rule["mirror"] == {"host": "ratings", "subset": "v2"}
    assert rule["mirrorPercentage"] == {"value": 50.0}
    assert rule["route"] == [to("v1")]  # one destination either way: no weight needed


def test_mirror_to_another_host_switches_host_and_interpolates() -> None:
    old = virtual_service("ratings", {"route": [to("v1")], "mirror": {"host": "ratings", "subset": "v2"},
                                      "mirrorPercentage": {"value": 20.0}})
    new = virtual_service("ratings", {"route": [to("v1")], "mirror": {"host": "ratings", "subset": "v3"}})
    blend = canary.blend([old], [new], 25)
    rule = blend.resources[0]["spec"]["http"][0]
    assert rule["mirror"]["subset"] == "v3"
    assert rule["mirrorPercentage"] == {"value": 40.0}  # 20·0.75 + 100·0.25
    assert any("mirror" in note for note in blend.notes)


def test_a_delay_only_in_new_is_injected_at_the_step_percentage() -> None:
    blend = canary.blend(release("all-v1"), release("delay-2s"), 10)
    rule = find(blend.resources, "VirtualService/bookinfo/books")["spec"]["http"][0]
    assert rule["fault"] == {"delay": {"fixedDelay": "2s", "percentage": {"value": 10.0}}}
    # The new release's expectation (every request ~2 s) does not hold for a blend.
    assert "annotations" not in find(blend.resources, "VirtualService/bookinfo/books")["metadata"]


def test_a_different_delay_switches_value_at_an_interpolated_percentage() -> None:
    blend = canary.blend(release("delay-2s"), release("delay-5s"), 10)
    rule = find(blend.resources, "VirtualService/bookinfo/books")["spec"]["http"][0]
    assert rule["fault"] == {"delay": {"fixedDelay": "5s", "percentage": {"value": 100.0}}}
    assert any("fault delay" in note for note in blend.notes)


def test_a_fault_only_in_old_fades_and_one_without_percentage_counts_as_none() -> None:
    old = virtual_service("ratings", {"route": [to("v1")], "fault": {"abort": {"httpStatus": 503,
                                                                               "percentage": {"value": 30.0}},
                                                                     "delay": {"fixedDelay": "1s"}}})
    new = virtual_service("ratings", {"route": [to("v1")]})
    rule = canary.blend([old], [new], 90).resources[0]["spec"]["http"][0]
    assert rule["fault"] == {"abort": {"httpStatus": 503, "percentage": {"value": 3.0}}}


def test_destination_rule_keeps_old_subsets_the_new_one_lacks() -> None:
    def rule(subsets: list[str], policy: str) -> dict:
        return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": "books", "namespace": "bookinfo"},
                "spec": {"host": "books", "trafficPolicy": {"loadBalancer": {"simple": policy}},
                         "subsets": [{"name": s, "labels": {"version": s}} for s in subsets]}}

    blend = canary.blend([rule(["v1", "v2"], "ROUND_ROBIN")], [rule(["v2", "v3"], "RANDOM")], 50)
    (spec,) = [r["spec"] for r in blend.resources]
    assert [s["name"] for s in spec["subsets"]] == ["v2", "v3", "v1"]
    assert spec["trafficPolicy"] == {"loadBalancer": {"simple": "RANDOM"}}
    assert blend.notes == ("DestinationRule/bookinfo/books: trafficPolicy of the new release from the first step",)


@pytest.mark.parametrize("percent", [0, 100])
def test_the_ends_are_exact_copies_of_each_release(percent: int) -> None:
    old, new = release("all-v1"), release("ratings-50")
    before = copy.deepcopy((old, new))
    blend = canary.blend(old, new, percent)
    assert list(blend.resources) == list(old if percent == 0 else new) and blend.notes == ()
    for resource in blend.resources:
        resource["spec"].clear()
    assert (old, new) == before


def test_a_blend_never_shares_dicts_with_its_inputs() -> None:
    old, new = release("all-v1"), release("circuit-breaker")
    before = copy.deepcopy((old, new))
    for resource in canary.blend(old, new, 50).resources:
        resource["spec"].clear()
        resource["metadata"].clear()
    assert (old, new) == before


@pytest.mark.parametrize("percent", [-1, 101, 10.5, True, "50"])
def test_percent_outside_0_to_100_is_refused(percent) -> None:
    with pytest.raises(ValueError, match="percent"):
        canary.blend([], [], percent)


def test_timeout_and_retries_switch_at_the_first_step_and_are_noted() -> None:
    blend = canary.blend(release("all-v1"), release("timeout-retries"), 10)
    rule = find(blend.resources, "VirtualService/bookinfo/ratings")["spec"]["http"][0]
    assert rule["timeout"] == "3s" and rule["retries"]["attempts"] == 3
    assert blend.notes == ("VirtualService/bookinfo/ratings http[0]: timeout, retries of the new release from "
                           "the first step",)


def test_new_security_policies_apply_at_once_and_old_ones_stay_until_the_end() -> None:
    blend = canary.blend(release("all-v1"), release("authz-bookinfo"), 10)
    assert "AuthorizationPolicy/bookinfo/allow-nothing: only in the new release, applies from the first step" \
        in blend.notes
    back = canary.blend(release("mtls-strict"), release("all-v1"), 90)
    assert find(back.resources, "PeerAuthentication/weir-system/default")["spec"] == {"mtls": {"mode": "STRICT"}}


def test_rule_sets_with_different_matches_switch_whole() -> None:
    old = virtual_service("ratings", {"route": [to("v1")]})
    new = virtual_service("ratings", {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
                                      "route": [to("v2")]}, {"route": [to("v1")]})
    blend = canary.blend([old], [new], 10)
    assert blend.resources[0]["spec"] == new["spec"]
    assert any("match differently" in note for note in blend.notes)


def test_route_replaced_by_a_redirect_switches_and_is_noted() -> None:
    old = virtual_service("ratings", {"route": [to("v1")]})
    new = virtual_service("ratings", {"redirect": {"uri": "/v2"}})
    blend = canary.blend([old], [new], 10)
    assert blend.resources[0]["spec"] == new["spec"]
    assert blend.notes == ("VirtualService/bookinfo/ratings http[0]: route becomes the new release's redirect "
                           "from the first step",)


SUBSETS = st.sampled_from(["v1", "v2", "v3", "v4"])
ROUTES = st.lists(st.tuples(SUBSETS, st.integers(0, 100)), min_size=1, max_size=4, unique_by=lambda e: e[0]) \
    .filter(lambda route: len(route) == 1 or sum(w for _, w in route) > 0)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(old=ROUTES, new=ROUTES, percent=st.integers(1, 99))
def test_blended_shares_are_the_weighted_mean_of_old_and_new(old, new, percent) -> None:
    old_route, new_route = [to(s, w) for s, w in old], [to(s, w) for s, w in new]
    blended = canary.blend_routes(old_route, new_route, percent / 100)
    mesh.api.load_document(virtual_service("ratings", {"route": blended}), "blend")
    if len(blended) > 1:
        assert sum(e["weight"] for e in blended) == canary.WEIGHT_TOTAL and all(e["weight"] > 0 for e in blended)
    got = shares(blended)
    want = {s: 0.0 for s, _ in old + new}
    for route, scale in ((old, 1 - percent / 100), (new, percent / 100)):
        total = sum(w for _, w in route)
        for subset, weight in route:  # a lone destination takes everything, whatever its weight
            want[subset] += scale * (1.0 if len(route) == 1 else weight / total)
    for subset, share in want.items():
        assert got.get(subset, 0.0) == pytest.approx(share, abs=1 / canary.WEIGHT_TOTAL)
