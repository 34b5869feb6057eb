"""End to end: the whole local mesh (control plane, ingress, bookinfo-lite with sidecars) on loopback.

Asserts what a user sees: the books contract through the ingress, each scenario's split, live config
changes with no failed request, bad input refused while traffic flows, NACKs shown, crashed processes
restarted, and (in the fixture's teardown) `down` leaving nothing behind.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.e2e


def versions(mesh, n: int, service: str) -> collections.Counter:
    return collections.Counter(mesh.books()["versions"][service] for _ in range(n))


def test_up_is_fast_and_idempotent(mesh):
    assert mesh.up_seconds < 60
    assert mesh.first_status == 200  # asked the moment `up` returned: it waits for the proxies to sync
    result = mesh.meshctl("up")
    assert "unchanged" in result.stdout
    assert sorted(mesh.pids()) == sorted(mesh.started)


def test_books_contract_through_the_ingress(mesh):
    mesh.apply("round-robin")
    body = mesh.books()
    assert set(body) == {"books", "versions"}
    assert body["versions"]["gw"] == "v1"
    assert body["versions"]["books"] in ("v1", "v2") and body["versions"]["ratings"] in ("v1", "v2")
    book = body["books"][0]
    assert {"id", "title", "author", "rating"} <= set(book)
    assert ("description" in book) == (body["versions"]["books"] == "v2")
    expected = {"v1": ":-)", "v2": "¯\\_(ツ)_/¯"}[body["versions"]["ratings"]]
    assert book["rating"]["presentation"] == expected


def test_ui_page_shows_books_and_versions(mesh):
    status, page = mesh.get("/")
    assert status == 200
    text = page.decode()
    assert "<html" in text and mesh.books()["books"][0]["title"] in text
    assert "gw" in text and "ratings" in text


def test_unknown_path_is_not_routed(mesh):
    status, _ = mesh.get("/gateway/nope")
    assert status == 404


def test_round_robin_serves_both_versions_in_turn(mesh):
    mesh.apply("round-robin")
    mesh.wait_synced()
    seen = [mesh.books()["versions"]["books"] for _ in range(20)]
    # One gw sidecar balances books round robin: strictly alternating.
    assert all(a != b for a, b in zip(seen, seen[1:])), seen
    assert set(versions(mesh, 40, "ratings")) == {"v1", "v2"}


def test_all_v1(mesh):
    mesh.apply("all-v1")
    mesh.wait_synced()
    for _ in range(30):
        assert mesh.books()["versions"] == {"gw": "v1", "books": "v1", "ratings": "v1"}


@pytest.mark.parametrize(("scenario", "v2_share"), [("ratings-50", 0.5), ("ratings-10-90", 0.9)])
def test_weighted_split_within_a_statistical_band(mesh, scenario, v2_share):
    mesh.apply(scenario)
    mesh.wait_synced()
    n = 400
    counts = versions(mesh, n, "ratings")
    sigma = (n * v2_share * (1 - v2_share)) ** 0.5
    assert abs(counts["v2"] - n * v2_share) < 4 * sigma, counts
    assert versions(mesh, 20, "books") == {"v1": 20}


class Load(threading.Thread):
    """Requests in a loop until stopped; records every status and ratings version."""

    def __init__(self, mesh) -> None:
        super().__init__(daemon=True)
        self.mesh = mesh
        self.stop = threading.Event()
        self.results: list[tuple[float, int, str]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            status, body = self.mesh.get("/gateway/books")
            version = json.loads(body)["versions"]["ratings"] if status == 200 else "-"
            self.results.append((time.monotonic(), status, version))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join(20)


def test_live_apply_switches_within_a_second_with_no_failed_request(mesh):
    mesh.apply("all-v1")
    mesh.wait_synced()
    with Load(mesh) as load:
        time.sleep(0.5)
        mesh.apply("ratings-10-90")
        applied = time.monotonic()
        propagation = mesh.wait_synced()
        time.sleep(1.5)
        mesh.apply("all-v1")
        mesh.wait_synced()
        time.sleep(0.5)
    statuses = collections.Counter(status for _, status, _ in load.results)
    assert statuses.keys() == {200}, statuses
    assert propagation < 1.0
    after = [v for t, _, v in load.results if applied + 1.0 < t < applied + 1.5]
    assert after and "v2" in after


def test_bad_apply_is_rejected_and_traffic_keeps_flowing(mesh, tmp_path):
    mesh.apply("ratings-50")
    mesh.wait_synced()
    before = mesh.meshctl_json("get", "virtualservice", "ratings")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: bookinfo}\n"
        "spec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: ratings, subset: v1}\n"
        "      weight: 0\n    - destination: {host: ratings, subset: v2}\n      weight: 0\n"
    )
    with Load(mesh) as load:
        result = mesh.meshctl("apply", "-f", str(bad), check=False)
        time.sleep(0.5)
    assert result.returncode != 0
    assert "bad.yaml" in result.stderr and "VirtualService/bookinfo/ratings" in result.stderr
    assert "spec.http[0].route" in result.stderr and "weight" in result.stderr
    assert mesh.meshctl_json("get", "virtualservice", "ratings") == before
    assert {status for _, status, _ in load.results} == {200}


def test_a_view_the_gateway_cannot_bind_is_nacked_and_the_old_view_kept(mesh, tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        extra = tmp_path / "extra-gateway.yaml"
        extra.write_text(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: extra, namespace: bookinfo}\n"
            f"spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {port}, name: http,"
            " protocol: HTTP}\n    hosts: ['*']\n"
        )
        try:
            mesh.meshctl("apply", "-f", str(extra))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                rows = {r["proxy"]: r for r in mesh.meshctl_json("proxy-status")}
                nack = rows["istio-ingressgateway.weir-system"]["lastNack"]
                if nack:
                    break
                time.sleep(0.1)
            assert nack and str(port) in json.dumps(nack), rows
            assert rows["istio-ingressgateway.weir-system"]["status"] != "SYNCED"
            assert mesh.get("/gateway/books")[0] == 200
        finally:
            mesh.meshctl("delete", "-f", str(extra))
    mesh.wait_synced()


def test_crashed_workload_is_restarted_and_shown_in_status(mesh):
    before = {p["name"]: p for p in mesh.meshctl_json("status")["processes"]}
    victim = before["ratings-v1"]
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = {p["name"]: p for p in mesh.meshctl_json("status")["processes"]}["ratings-v1"]
        if now["restarts"] > victim["restarts"] and now["ready"]:
            break
        time.sleep(0.2)
    assert now["restarts"] == victim["restarts"] + 1 and now["ready"], now
    assert now["pid"] != victim["pid"]
    mesh.started.append(now["pid"])
    mesh.apply("all-v1")
    mesh.wait_synced()
    assert mesh.books()["versions"]["ratings"] == "v1"


def test_observability_verbs(mesh):
    mesh.books()
    stats = mesh.meshctl("stats", "gw-v1").stdout
    assert 'istio_requests_total{reporter="source",source_workload="gw-v1"' in stats
    assert 'destination_service="books.bookinfo.svc.cluster.local"' in stats
    routes = json.loads(mesh.meshctl("proxy-config", "gw-v1", "routes").stdout)
    assert any(table["name"] == "9080" for table in routes)
    assert mesh.meshctl("logs", "books-v1").stdout
    assert mesh.meshctl("logs", "books-v1", "--proxy").returncode == 0
