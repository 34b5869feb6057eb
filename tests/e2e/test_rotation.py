"""End to end: workload certificates with a lifetime of seconds rotate under continuous traffic, and not one
request fails. A mesh of its own (stack `rotation`, `weir:security.workloadCertTtl: 6s`): every proxy
renews about every 3 s (half its lifetime), while requests flow ingress → gw → books → ratings over mTLS."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.e2e.conftest import running_mesh

pytestmark = pytest.mark.e2e

TTL = "6s"
TRAFFIC_S = 12.0  # four lifetimes' worth of renewals per proxy
WORKLOADS = ("ingress", "gw-v1", "books-v1", "ratings-v1")


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory):
    config = {"weir:routing": "all-v1", "weir:security": {"workloadCertTtl": TTL}}
    with running_mesh(tmp_path_factory.mktemp("weir-rotation"), stack="rotation", extra_config=config) as mesh:
        yield mesh


def serial(mesh, workload: str) -> str:
    return json.loads(mesh.meshctl("proxy-config", workload, "secrets").stdout)["serial"]


def rotations(mesh, workload: str) -> float:
    for line in mesh.meshctl("stats", workload).stdout.splitlines():
        if line.startswith("weir_cert_rotations_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_rotation_under_continuous_traffic_fails_no_request(short_lived):
    mesh = short_lived
    serials = {w: serial(mesh, w) for w in WORKLOADS}
    before = {w: rotations(mesh, w) for w in WORKLOADS}
    outcomes: list[int] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status, _ = mesh.get("/gateway/books")
            outcomes.append(status)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(TRAFFIC_S)  # the traffic runs for a while: real time is what certificates expire in
    stop.set()
    for thread in threads:
        thread.join()

    failed = [s for s in outcomes if s != 200]
    assert len(outcomes) > 50 and failed == [], f"{len(failed)} of {len(outcomes)} failed: {set(failed)}"
    for workload in WORKLOADS:
        assert rotations(mesh, workload) - before[workload] >= 2, workload
        assert serial(mesh, workload) != serials[workload], workload
