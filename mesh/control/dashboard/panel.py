"""The side panel of one node: its traffic in and out, response codes, the config in effect on it and
its proxy's most recent requests.

Pure: `build(graph, workload, effects, requests)`; the graph is mesh.control.dashboard.graph's, the
effects mesh.control.dashboard.badges', the requests what the proxy's admin `GET /access_log` answered
(None when it has no such endpoint). mesh.control.dashboard.app fetches and serves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mesh.control.dashboard import badges

NO_ACCESS_LOG = "no access log"


def build(graph: dict, workload: str, effects: Iterable[badges.Effect],
          requests: Sequence[dict[str, Any]] | None, note: str = "") -> dict | None:
    """The panel's JSON, or None when the graph has no such node."""
    node = next((n for n in graph["nodes"] if n["id"] == workload), None)
    if node is None:
        return None
    inbound = [e for e in graph["edges"] if e["target"] == workload]
    codes: dict[str, float] = {}
    for edge in inbound:
        for code, rate in edge["codes"].items():
            codes[code] = round(codes.get(code, 0.0) + rate, 3)
    return {
        "node": node,
        "inbound": inbound,
        "outbound": [e for e in graph["edges"] if e["source"] == workload],
        "codes": dict(sorted(codes.items())),
        "config": config(effects),
        "requests": list(requests) if requests is not None else None,
        "requestsNote": note or ("" if requests is not None else NO_ACCESS_LOG),
    }


def config(effects: Iterable[badges.Effect]) -> list[dict]:
    """The resources acting on the node, each once, with its badges and the spec parts that matter."""
    out: dict[tuple[str, str, str], dict] = {}
    for e in effects:
        entry = out.setdefault((e.kind, e.namespace, e.name), {
            "kind": e.kind, "namespace": e.namespace, "name": e.name, "badges": [], "snippets": []})
        if e.badge and {"badge": e.badge, "text": e.text} not in entry["badges"]:
            entry["badges"].append({"badge": e.badge, "text": e.text})
        if e.snippet not in entry["snippets"]:
            entry["snippets"].append(e.snippet)
    return list(out.values())
