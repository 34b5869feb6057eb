"""Two scrapes of every proxy → the service graph: rates, shares, error rate, p99, mTLS, unknown callers."""

from __future__ import annotations

import pytest

from mesh.control.dashboard import graph, metrics
from tests.mesh.control.dashboard.promtext import Row, render

WORKLOADS = [graph.Workload(f"{app}-{v}", "bookinfo", app, v) for app, v in
             [("gw", "v1"), ("books", "v1"), ("ratings", "v1"), ("ratings", "v2")]]
INGRESS = graph.Workload("istio-ingressgateway", "weir-system", role=graph.GATEWAY)


def window(before: list[Row], after: list[Row], seconds: float = 2.0) -> graph.Window:
    return metrics.parse(render(before), 10.0), metrics.parse(render(after), 10.0 + seconds)


def edges(built: dict) -> dict[str, dict]:
    return {e["id"]: e for e in built["edges"]}


def test_rates_shares_errors_and_latency_from_source_reports() -> None:
    books = window(
        [Row("source", "books-v1", "ratings-v1", 100), Row("source", "books-v1", "ratings-v2", 100)],
        [Row("source", "books-v1", "ratings-v1", 102), Row("source", "books-v1", "ratings-v2", 118),
         Row("source", "books-v1", "ratings-v2", 2, code=503, latency_ms=400)])
    built = graph.build(WORKLOADS, {"books-v1.bookinfo": books})
    v1, v2 = edges(built)["books-v1>ratings-v1"], edges(built)["books-v1>ratings-v2"]
    assert (v1["rps"], v2["rps"]) == (1.0, 10.0)
    assert (v1["share"], v2["share"]) == (pytest.approx(0.091, abs=1e-3), pytest.approx(0.909, abs=1e-3))
    assert v2["errorRate"] == 0.1 and v2["codes"] == {"200": 9.0, "503": 1.0}
    assert v2["p50"] == pytest.approx(3.3, abs=0.1)  # 18 of 20 requests in the 1-5 ms bucket
    assert 250 < v2["p99"] <= 500  # the slow 503s
    assert v2["reporter"] == "source" and v2["mtls"] is True
    nodes = {n["id"]: n for n in built["nodes"]}
    assert nodes["ratings-v2"]["rps"] == 10.0 and nodes["ratings-v2"]["errorRate"] == 0.1
    assert nodes["ratings-v2"]["parent"] == "app:ratings" and nodes["gw-v1"]["rps"] == 0
    assert {g["id"] for g in built["groups"]} == {"app:gw", "app:books", "app:ratings"}


def test_every_workload_is_a_node_even_without_traffic_and_the_gateway_is_the_ingress() -> None:
    built = graph.build([*WORKLOADS, INGRESS], {})
    assert [n["id"] for n in built["nodes"]] == sorted(w.name for w in [*WORKLOADS, INGRESS])
    ingress = next(n for n in built["nodes"] if n["role"] == graph.GATEWAY)
    assert ingress["label"] == "ingress" and "parent" not in ingress and built["edges"] == []


def test_source_reports_win_over_destination_reports_of_the_same_call() -> None:
    gw = window([Row("source", "gw-v1", "books-v1", 0)], [Row("source", "gw-v1", "books-v1", 10)])
    books = window([Row("destination", "gw-v1", "books-v1", 0)], [Row("destination", "gw-v1", "books-v1", 40)])
    edge = edges(graph.build(WORKLOADS, {"gw": gw, "books": books}))["gw-v1>books-v1"]
    assert (edge["rps"], edge["reporter"]) == (5.0, "source")


def test_callers_without_sidecar_come_from_destination_reports_as_unknown_nodes() -> None:
    books = window([], [Row("destination", "unknown", "books-v1", 6, mtls=False)], seconds=3.0)
    built = graph.build(WORKLOADS, {"books": books})
    edge = edges(built)["unknown>books-v1"]
    assert (edge["rps"], edge["reporter"], edge["mtls"]) == (2.0, "destination", False)
    unknown = next(n for n in built["nodes"] if n["id"] == "unknown")
    assert unknown["role"] == graph.EXTERNAL and "parent" not in unknown


def test_mtls_is_what_the_destination_saw() -> None:
    gw = window([], [Row("source", "gw-v1", "books-v1", 4, mtls=True)])
    books = window([], [Row("destination", "gw-v1", "books-v1", 4, mtls=False)])
    edge = edges(graph.build(WORKLOADS, {"gw": gw, "books": books}))["gw-v1>books-v1"]
    assert edge["mtls"] is False and edge["mtlsShare"] == 0.0


def test_an_idle_edge_stays_with_zero_rate_and_a_new_proxy_has_no_rate_yet() -> None:
    idle = window([Row("source", "gw-v1", "books-v1", 9)], [Row("source", "gw-v1", "books-v1", 9)])
    first = (None, metrics.parse(render([Row("source", "books-v1", "ratings-v1", 50)]), 1.0))
    found = edges(graph.build(WORKLOADS, {"gw": idle, "books": first}))
    assert found["gw-v1>books-v1"]["rps"] == 0 and found["gw-v1>books-v1"]["share"] is None
    assert found["books-v1>ratings-v1"]["rps"] == 0 and found["books-v1>ratings-v1"]["p99"] is None


def test_calls_without_a_destination_workload_draw_no_edge() -> None:
    gw = window([], [Row("source", "gw-v1", "unknown", 5, code=503, flags="UO")])
    assert graph.build(WORKLOADS, {"gw": gw})["edges"] == []
