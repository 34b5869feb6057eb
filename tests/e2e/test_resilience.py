"""End to end: the article's step 6 and Istio's tasks on bookinfo-lite — request routing by user,
fault injection (delay, abort, only for one user), route timeouts and retries. Timing and ratios are
checked within bands, as Istio's own tests do."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.rules import outlier_books

pytestmark = pytest.mark.e2e

USER_ROUTING = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: books, namespace: bookinfo}
spec:
  hosts: [books]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: books, subset: v2}}]
  - route: [{destination: {host: books, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: ratings, subset: v1}}]
  - route: [{destination: {host: ratings, subset: v1}}]
"""


def timed(mesh, headers=None) -> tuple[int, dict, float]:
    start = time.monotonic()
    status, body = mesh.get("/gateway/books", headers=headers, timeout=20)
    return status, json.loads(body), time.monotonic() - start


@pytest.fixture
def clean(mesh):
    mesh.apply("all-v1")
    mesh.wait_synced()
    yield mesh
    for workload in ("ratings-v1", "ratings-v2", "books-v1", "books-v2"):
        mesh.meshctl("chaos", workload, "--reset")
    mesh.apply("all-v1")
    mesh.wait_synced()


def test_routing_and_an_abort_only_for_one_user(clean, tmp_path):
    mesh = clean
    rules = tmp_path / "user.yaml"
    rules.write_text(USER_ROUTING)
    mesh.meshctl("apply", "-f", str(rules))
    mesh.wait_synced()
    status, body, _ = timed(mesh)
    assert status == 200 and body["versions"]["books"] == "v1"
    status, body, _ = timed(mesh, {"end-user": "jason"})
    # jason reaches books v2, whose call to ratings is aborted by its own sidecar (FI), passed on as 500
    assert status == 500 and body["service"] in ("books", "ratings")
    stats = mesh.meshctl("stats", "books-v2").stdout
    assert 'response_code="500",response_flags="FI"' in stats


def test_delay_2s_slows_every_request_but_the_app_still_answers(clean):
    mesh = clean
    mesh.apply("delay-2s")
    mesh.wait_synced()
    status, body, elapsed = timed(mesh)
    assert status == 200 and body["versions"]["books"] == "v1"
    assert 1.9 <= elapsed < 3.0
    assert 'response_flags="DI"' in mesh.meshctl("stats", "gw-v1").stdout


def test_delay_5s_makes_the_caller_give_up_after_its_3s_timeout(clean):
    mesh = clean
    mesh.apply("delay-5s")
    mesh.wait_synced()
    status, body, elapsed = timed(mesh)
    assert status == 504 and body["service"] == "books"
    assert 2.8 <= elapsed < 4.5


def test_retries_turn_a_half_failing_upstream_into_mostly_successes(clean):
    mesh = clean
    mesh.apply("timeout-retries")
    mesh.wait_synced()
    mesh.meshctl("chaos", "ratings-v1", "--error-rate", "0.5")
    n = 60
    ok = sum(timed(mesh)[0] == 200 for _ in range(n))
    assert ok >= 0.8 * n, f"{ok}/{n} succeeded; expected about 94% with 3 retries"
    stats = mesh.meshctl("stats", "books-v1").stdout
    retries = [line for line in stats.splitlines() if line.startswith("weir_upstream_rq_retry_total")]
    assert retries and float(retries[0].split()[-1]) > 0


def test_per_try_timeouts_and_retries_end_in_a_504_from_the_sidecar(clean):
    mesh = clean
    mesh.apply("timeout-retries")
    mesh.wait_synced()
    mesh.meshctl("chaos", "ratings-v1", "--delay", "1")
    status, body, elapsed = timed(mesh)
    assert status == 504 and body["service"] == "books"
    assert 1.8 <= elapsed < 3.2  # 4 tries × 0.5 s + backoff, under the 3 s route timeout
    assert 'response_code="504",response_flags="UT,URX"' in mesh.meshctl("stats", "books-v1").stdout


def inbound_count(mesh, workload: str, source: str) -> float:
    """Requests `workload`'s sidecar received from `source` (reporter=destination)."""
    total = 0.0
    for line in mesh.meshctl("stats", workload).stdout.splitlines():
        if (line.startswith("istio_requests_total{") and 'reporter="destination"' in line
                and f'source_workload="{source}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_mirroring_copies_every_request_to_v2_while_v1_answers(clean):
    mesh = clean
    mesh.apply("mirroring")
    mesh.wait_synced()
    before = inbound_count(mesh, "ratings-v2", "books-v1")
    n = 20
    assert {timed(mesh)[1]["versions"]["ratings"] for _ in range(n)} == {"v1"}
    deadline = time.monotonic() + 5
    while inbound_count(mesh, "ratings-v2", "books-v1") - before < n and time.monotonic() < deadline:
        time.sleep(0.1)
    assert inbound_count(mesh, "ratings-v2", "books-v1") - before == n
    mesh.meshctl("chaos", "ratings-v2", "--error-rate", "1")  # a failing mirror changes nothing for clients
    assert all(timed(mesh)[0] == 200 for _ in range(10))
    mesh.meshctl("chaos", "ratings-v2", "--reset")


def test_circuit_breaker_overflows_concurrent_requests_with_uo(clean):
    from concurrent.futures import ThreadPoolExecutor

    mesh = clean
    mesh.apply("circuit-breaker")
    mesh.wait_synced()
    mesh.meshctl("chaos", "books-v1", "--delay", "0.2")  # keep requests in flight long enough to collide
    mesh.meshctl("chaos", "books-v2", "--delay", "0.2")
    try:
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda _: mesh.get("/gateway/books", timeout=20)[0], range(36)))
    finally:
        mesh.meshctl("chaos", "books-v2", "--reset")
    assert 200 in statuses and 503 in statuses, statuses
    stats = mesh.meshctl("stats", "gw-v1").stdout
    assert 'response_code="503",response_flags="UO"' in stats
    assert 'weir_circuit_breaker_overflow_total{cluster="outbound|9080||books.bookinfo.svc.cluster.local"' in stats


OUTLIER_RULE = outlier_books(consecutive_5xx=1, base_ejection_s=2, max_ejection_percent=100)


def books_endpoints(mesh) -> dict[str, str]:
    dump = json.loads(mesh.meshctl("proxy-config", "gw-v1", "endpoints").stdout)
    (books,) = [a for a in dump if a["cluster"] == "outbound|9080||books.bookinfo.svc.cluster.local"]
    return {e["workload"]: e["health"] for e in books["endpoints"]}


def test_outlier_detection_ejects_a_failing_version_and_brings_it_back(clean, tmp_path):
    mesh = clean
    rule = tmp_path / "outlier.yaml"
    rule.write_text(OUTLIER_RULE)
    mesh.meshctl("apply", "-f", str(rule))
    mesh.wait_synced()
    mesh.meshctl("chaos", "books-v2", "--error-rate", "1")
    results = [timed(mesh) for _ in range(12)]
    failures = [i for i, (status, _, _) in enumerate(results) if status != 200]
    assert len(failures) <= 2 and all(i < 4 for i in failures), failures  # ejected at its first 5xx
    assert {body["versions"]["books"] for status, body, _ in results[4:]} == {"v1"}
    assert books_endpoints(mesh) == {"books-v1": "HEALTHY", "books-v2": "EJECTED"}
    mesh.meshctl("chaos", "books-v2", "--reset")
    time.sleep(3.5)  # 2 s ejection, returned at the next 1 s sweep
    assert "v2" in {timed(mesh)[1]["versions"]["books"] for _ in range(6)}
    assert books_endpoints(mesh)["books-v2"] == "HEALTHY"


REQUEST_TIMEOUT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: books, namespace: bookinfo}
spec:
  hosts: [books]
  http:
  - route: [{destination: {host: books, subset: v1}}]
    timeout: 0.5s
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  http:
  - fault: {delay: {fixedDelay: 2s, percentage: {value: 100}}}
    route: [{destination: {host: ratings, subset: v1}}]
"""


def test_request_timeout_task_half_a_second_against_a_2s_delay(clean, tmp_path):
    mesh = clean
    rules = tmp_path / "timeout.yaml"
    rules.write_text(REQUEST_TIMEOUT)
    mesh.meshctl("apply", "-f", str(rules))
    mesh.wait_synced()
    status, body, elapsed = timed(mesh)
    assert status == 504 and body["service"] == "books"
    assert 0.45 <= elapsed < 1.2
    assert 'response_code="504",response_flags="UT"' in mesh.meshctl("stats", "gw-v1").stdout


DELAY_FOR_JASON = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: books, namespace: bookinfo}
spec:
  hosts: [books]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {delay: {fixedDelay: 1.5s, percentage: {value: 100}}}
    route: [{destination: {host: books, subset: v1}}]
  - route: [{destination: {host: books, subset: v1}}]
"""


def test_a_delay_only_for_one_user(clean, tmp_path):
    mesh = clean
    rules = tmp_path / "delay-jason.yaml"
    rules.write_text(DELAY_FOR_JASON)
    mesh.meshctl("apply", "-f", str(rules))
    mesh.wait_synced()
    status, _, others = timed(mesh)
    assert status == 200 and others < 1.0
    status, _, jason = timed(mesh, {"end-user": "jason"})
    assert status == 200 and 1.45 <= jason < 2.8
