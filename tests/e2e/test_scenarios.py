"""End to end: every routing scenario under stacks/routing/ delivers what its `weir.dev/expect` annotation
states, on the real local mesh — the same statements the smoke playbooks check (mesh.local.expectations).

Each test applies the scenario, sets its chaos switches, scrapes the sidecars it names, sends its requests
(threads for its concurrency), scrapes again and judges with `expectations.check`; then it resets the
switches and re-applies all-v1.
"""

from __future__ import annotations

import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mesh.local import expectations, probes
from mesh.local.expectations import Observations, Response

pytestmark = pytest.mark.e2e

ROUTING = Path(__file__).resolve().parents[2] / "stacks" / "routing"
SCENARIOS = sorted(p.stem for p in ROUTING.glob("*.yaml") if p.stem not in ("gateway", "destination-rules"))
CLIENT_TIMEOUT = 20.0  # seconds; far above any scenario's slowest answer (delay-5s: about 3 s)
STATS_SETTLE = 3.0  # seconds to re-scrape while a stats rule is unmet (mirrors are fire-and-forget)


def send(mesh, expectation) -> list[Response]:
    def one(_: int) -> Response:
        start = time.monotonic()
        try:
            status, body = mesh.get(expectation.path, headers=dict(expectation.headers), timeout=CLIENT_TIMEOUT)
        except (urllib.error.URLError, OSError) as exc:
            status, body = expectations.NO_RESPONSE, str(exc)
        return Response(status, body, (time.monotonic() - start) * 1000)

    with ThreadPoolExecutor(expectation.concurrency) as pool:
        return list(pool.map(one, range(expectation.requests)))


def scrape(mesh, workloads) -> dict[str, str]:
    return {w: mesh.meshctl("stats", w).stdout for w in workloads}


def send_probes(mesh, expectation) -> list[probes.ProbeResult]:
    if not expectation.probes:
        return []
    ports = mesh.sidecar_ports()
    return [probes.send(probe, ports) for probe in expectation.probes]


def has_policies(path: Path) -> bool:
    """Security resources are not replaced by the next scenario's apply: such a scenario is deleted after."""
    return "security.istio.io/" in path.read_text()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_meets_its_expectation(mesh, scenario):
    path = mesh.root / "stacks" / "routing" / f"{scenario}.yaml"
    expectation = expectations.load(path)
    mesh.apply(scenario)
    mesh.wait_synced()
    try:
        for step in expectation.setup:
            mesh.meshctl(*step.meshctl_args())
        before = scrape(mesh, expectation.workloads)
        responses = send(mesh, expectation)
        probe_results = send_probes(mesh, expectation)
        deadline = time.monotonic() + STATS_SETTLE
        while True:
            observed = Observations(responses, before, scrape(mesh, expectation.workloads), probe_results)
            failures = expectations.check(expectation, observed)
            if not failures or not expectation.workloads or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert failures == [], f"{scenario}: " + "; ".join(failures)
    finally:
        for step in expectation.setup:
            mesh.meshctl(*step.reset_args())
        if has_policies(path):
            mesh.meshctl("delete", "-f", str(path))
        mesh.apply("all-v1")
        mesh.wait_synced()
