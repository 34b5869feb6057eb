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

from mesh.local import expectations
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


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_meets_its_expectation(mesh, scenario):
    expectation = expectations.load(mesh.root / "stacks" / "routing" / f"{scenario}.yaml")
    mesh.apply(scenario)
    mesh.wait_synced()
    try:
        for step in expectation.setup:
            mesh.meshctl(*step.meshctl_args())
        before = scrape(mesh, expectation.workloads)
        responses = send(mesh, expectation)
        deadline = time.monotonic() + STATS_SETTLE
        while True:
            observed = Observations(responses, before, scrape(mesh, expectation.workloads))
            failures = expectations.check(expectation, observed)
            if not failures or not expectation.workloads or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert failures == [], f"{scenario}: " + "; ".join(failures)
    finally:
        for step in expectation.setup:
            mesh.meshctl(*step.reset_args())
        mesh.apply("all-v1")
        mesh.wait_synced()
