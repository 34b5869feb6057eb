"""End to end: every routing scenario under stacks/routing/ delivers what its `weir.dev/expect` annotation
states, on the real local mesh — the same statements the smoke playbooks check (mesh.local.expectations).

Each test applies the scenario and runs it with mesh.local.smoke's runner (`exercise`: chaos switches,
scrapes, requests with threads for its concurrency, probes, judged by `judgement.check_rules`); then it
re-applies all-v1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.local import environment, expectations, smoke

pytestmark = pytest.mark.e2e

ROUTING = Path(__file__).resolve().parents[2] / "stacks" / "routing"
SCENARIOS = sorted(p.stem for p in ROUTING.glob("*.yaml") if p.stem not in ("gateway", "destination-rules"))


def has_policies(path: Path) -> bool:
    """Security resources are not replaced by the next scenario's apply: such a scenario is deleted after."""
    return "security.istio.io/" in path.read_text()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_meets_its_expectation(mesh, scenario):
    path = mesh.root / "stacks" / "routing" / f"{scenario}.yaml"
    expectation = expectations.load(path)
    env = environment.attach(mesh.stack, mesh.root / "state" / mesh.stack)
    mesh.apply(scenario)
    mesh.wait_synced()
    try:
        _, by_rule = smoke.exercise(env, expectation, ingress=mesh.ingress)
        failures = [failure for found in by_rule.values() for failure in found]
        assert failures == [], f"{scenario}: " + "; ".join(failures)
    finally:
        if has_policies(path):
            mesh.meshctl("delete", "-f", str(path))
        mesh.apply("all-v1")
        mesh.wait_synced()
