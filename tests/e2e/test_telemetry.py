"""End to end: one request followed through the mesh by its trace, its access log lines and its metrics."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

pytestmark = pytest.mark.e2e

HOPS = {("istio-ingressgateway", "gateway"), ("gw-v1", "inbound"), ("gw-v1", "outbound"), ("books-v1", "inbound"),
        ("books-v1", "outbound"), ("ratings-v1", "inbound")}


def traced(mesh, request_id: str, timeout: float = 5.0) -> dict:
    """The trace of `request_id` once every hop's span reached the collector (proxies flush every 0.25 s)."""
    deadline = time.monotonic() + timeout
    while True:
        result = mesh.meshctl("trace", request_id, "-o", "json", check=False)
        if result.returncode == 0:
            doc = json.loads(result.stdout)
            if {(s["attributes"]["workload"], s["attributes"]["direction"]) for s in doc["spans"]} >= HOPS:
                return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"no complete trace for {request_id}: {result.stdout or result.stderr}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def all_v1(mesh):
    mesh.apply("all-v1")
    mesh.wait_synced()
    yield
    mesh.meshctl("up")  # back to the pinned release


def test_a_request_is_one_trace_through_every_hop(mesh, all_v1) -> None:
    status, _ = mesh.get("/gateway/books", headers={"x-request-id": "trace-me-1"})
    assert status == 200
    doc = traced(mesh, "trace-me-1")
    spans = {s["spanId"]: s for s in doc["spans"]}
    assert {s["traceId"] for s in spans.values()} == {doc["traceId"]}
    roots = [s for s in spans.values() if not s["parentSpanId"]]
    assert [(r["attributes"]["workload"], r["attributes"]["http.status_code"]) for r in roots] == [
        ("istio-ingressgateway", 200)]
    assert all(s["parentSpanId"] in spans for s in spans.values() if s["parentSpanId"])  # one connected tree
    by_hop = {(s["attributes"]["workload"], s["attributes"]["direction"]): s for s in spans.values()}
    # the chain: gateway → gw inbound → gw outbound → books inbound → books outbound → ratings inbound
    chain = [("istio-ingressgateway", "gateway"), ("gw-v1", "inbound"), ("gw-v1", "outbound"), ("books-v1", "inbound"),
             ("books-v1", "outbound"), ("ratings-v1", "inbound")]
    for parent, child in zip(chain, chain[1:]):
        assert by_hop[child]["parentSpanId"] == by_hop[parent]["spanId"], (parent, child)
        # start times come from each event loop's cached clock (uvloop): a child may seem to start a little
        # before its parent, never by more than a loop iteration
        assert by_hop[child]["startTimeUnixNano"] >= by_hop[parent]["startTimeUnixNano"] - 5_000_000
    tree = mesh.meshctl("trace", "trace-me-1").stdout
    assert tree.startswith(f"trace {doc['traceId']}: ") and "└─ ratings-v1 inbound" in tree


def test_a_callers_b3_trace_is_joined_not_restarted(mesh, all_v1) -> None:
    trace_id = "463ac35c9f6413ad"  # a 64-bit B3 trace id: Zipkin pads it to 128 bits
    status, _ = mesh.get("/gateway/books", headers={"x-request-id": "trace-me-b3", "x-b3-traceid": trace_id,
                                                    "x-b3-spanid": "a2fb4a1d1a96d312", "x-b3-sampled": "1"})
    assert status == 200
    doc = traced(mesh, "trace-me-b3")
    assert doc["traceId"] == "0" * 16 + trace_id
    (root,) = [s for s in doc["spans"] if s["attributes"]["workload"] == "istio-ingressgateway"]
    assert root["parentSpanId"] == "a2fb4a1d1a96d312"


def test_access_log_lines_match_the_request(mesh, all_v1) -> None:
    status, _ = mesh.get("/gateway/books", headers={"x-request-id": "log-me-1", "user-agent": "weir-e2e"})
    assert status == 200
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in mesh.meshctl("logs", "gw-v1", "--proxy").stdout.splitlines()
                 if line.startswith("{") and "log-me-1" in line]
        if len(lines) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    by_direction = {line["direction"]: line for line in lines}
    inbound, outbound = by_direction["inbound"], by_direction["outbound"]
    assert (inbound["method"], inbound["path"], inbound["response_code"], inbound["response_flags"]) == (
        "GET", "/gateway/books", 200, "-")
    assert inbound["user_agent"] == "weir-e2e" and inbound["workload"] == "gw-v1"
    assert inbound["downstream_peer_principal"] == "spiffe://cluster.local/ns/weir-system/sa/istio-ingressgateway-service-account"
    assert outbound["path"] == "/books" and outbound["upstream_cluster"].endswith("books.bookinfo.svc.cluster.local")
    assert inbound["trace_id"] == outbound["trace_id"] and inbound["bytes_sent"] > 0
    ports = mesh.sidecar_ports()["gw-v1"]
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/access_log?limit=200", timeout=5) as answer:
        recent = json.load(answer)
    assert any(entry["request_id"] == "log-me-1" for entry in recent)


def test_istio_size_and_connection_metrics(mesh, all_v1) -> None:
    mesh.get("/gateway/books")
    text = mesh.meshctl("stats", "books-v1").stdout
    assert 'istio_response_bytes_bucket{reporter="destination"' in text
    assert "istio_request_bytes_count{" in text
    assert 'istio_tcp_connections_opened_total{reporter="destination"' in text
    assert 'connection_security_policy="mutual_tls"' in text.split("istio_tcp_connections_opened_total", 1)[1]
