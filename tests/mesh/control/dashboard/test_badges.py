"""Config → node badges and "config in effect", on the project's routing scenarios (stacks/routing/)."""

from __future__ import annotations

from pathlib import Path

import pytest

import mesh.api as api
from mesh.control import registry, snapshot
from mesh.control.dashboard import badges
from tests.mesh.control.conftest import BOOKINFO

ROUTING = Path(__file__).resolve().parents[4] / "stacks" / "routing"
GATEWAY = "istio-ingressgateway"


def effects_of(scenario: str) -> dict[str, list[badges.Effect]]:
    resources = api.load_files([ROUTING / f"{scenario}.yaml"])
    snap = snapshot.build_snapshot(resources, registry.parse_registry(BOOKINFO))
    return badges.effects(snap, [GATEWAY])


def shown(found: dict[str, list[badges.Effect]], workload: str) -> set[tuple[str, str]]:
    return {(b["badge"], b["text"]) for b in badges.badges(found.get(workload, ()))}


def test_weights_show_on_each_subsets_workloads() -> None:
    found = effects_of("ratings-10-90")
    assert ("route", "10%") in shown(found, "ratings-v1") and ("route", "90%") in shown(found, "ratings-v2")
    assert ("VS", "") in shown(found, "ratings-v1")
    assert ("route", "100%") in shown(found, "books-v1") and not any(b == "route" for b, _ in shown(found, "books-v2"))
    assert ("VS", "gateway") in shown(found, GATEWAY)


def test_round_robin_has_no_split_badges() -> None:
    found = effects_of("round-robin")
    assert shown(found, "ratings-v1") == {("VS", "")}


def test_fault_is_on_the_service_called() -> None:
    found = effects_of("delay-2s")
    assert ("fault", "delay 2s") in shown(found, "books-v1")
    assert not any(b == "fault" for b, _ in shown(found, "ratings-v1"))


def test_mirror_marks_the_mirror_target() -> None:
    found = effects_of("mirroring")
    assert ("mirror", "target") in shown(found, "ratings-v2")
    assert ("route", "100%") in shown(found, "ratings-v1") and not any(b == "mirror" for b, _ in shown(found, "ratings-v1"))


def test_circuit_breaker_from_the_destination_rule() -> None:
    found = effects_of("circuit-breaker")
    assert any(b == "CB" for b, _ in shown(found, "books-v1"))
    [rule] = [e for e in found["books-v1"] if e.kind == "DestinationRule"]
    assert "connectionPool" in rule.snippet["trafficPolicy"] and "outlierDetection" in rule.snippet["trafficPolicy"]


@pytest.mark.parametrize(("scenario", "workload", "badge"), [
    ("mtls-strict", "books-v1", ("mTLS", "STRICT")),
    ("authz-bookinfo", "ratings-v1", ("authz", "ALLOW")),
])
def test_security_badges(scenario: str, workload: str, badge: tuple[str, str]) -> None:
    assert badge in shown(effects_of(scenario), workload)
