"""One node's side panel: its edges, response codes, config in effect and recent requests."""

from __future__ import annotations

from mesh.control.dashboard import badges, graph, metrics, panel
from tests.mesh.control.dashboard.promtext import Row, render

WORKLOADS = [graph.Workload("books-v1", "bookinfo", "books", "v1"), graph.Workload("ratings-v1", "bookinfo", "ratings", "v1")]


def built() -> dict:
    before = metrics.parse(render([Row("source", "books-v1", "ratings-v1", 0)]), 0.0)
    after = metrics.parse(render([Row("source", "books-v1", "ratings-v1", 8),
                                  Row("source", "books-v1", "ratings-v1", 2, code=503)]), 2.0)
    return graph.build(WORKLOADS, {"books": (before, after)})


EFFECTS = [
    badges.Effect("VirtualService", "bookinfo", "ratings", "VS", "", {"hosts": ["ratings"]}),
    badges.Effect("VirtualService", "bookinfo", "ratings", "route", "90%", {"route": []}),
    badges.Effect("DestinationRule", "bookinfo", "ratings", "", "", {"host": "ratings"}),
]


def test_panel_of_a_node() -> None:
    found = panel.build(built(), "ratings-v1", EFFECTS, [{"path": "/ratings", "response_code": 200}])
    assert found["node"]["id"] == "ratings-v1" and found["outbound"] == []
    assert [e["source"] for e in found["inbound"]] == ["books-v1"]
    assert found["codes"] == {"200": 4.0, "503": 1.0}
    assert found["config"] == [
        {"kind": "VirtualService", "namespace": "bookinfo", "name": "ratings",
         "badges": [{"badge": "VS", "text": ""}, {"badge": "route", "text": "90%"}],
         "snippets": [{"hosts": ["ratings"]}, {"route": []}]},
        {"kind": "DestinationRule", "namespace": "bookinfo", "name": "ratings", "badges": [],
         "snippets": [{"host": "ratings"}]},
    ]
    assert found["requests"] == [{"path": "/ratings", "response_code": 200}] and found["requestsNote"] == ""


def test_without_access_log_and_unknown_nodes() -> None:
    found = panel.build(built(), "books-v1", [], None)
    assert found["requests"] is None and found["requestsNote"] == panel.NO_ACCESS_LOG
    assert [e["target"] for e in found["outbound"]] == ["ratings-v1"]
    assert panel.build(built(), "nope", [], None) is None
