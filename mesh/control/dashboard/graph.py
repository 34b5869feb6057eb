"""The service graph (Kiali's versioned-app graph): workloads as nodes grouped by app, calls as edges
with request rate, share, error rate, p50/p99 latency and mTLS, from two scrapes of every proxy.

Pure: `build(workloads, windows)` where a window is (older, newer) scrape of one proxy. An edge is
source workload → destination workload. It is read from what the caller's sidecar reported
(`reporter="source"`); a pair nobody reported as source (a caller without sidecar, a mirrored copy)
comes from the destination's reports. mTLS is what the destination saw (`connection_security_policy`),
or on the source side a checked peer principal. Next: mesh.control.dashboard.badges decorates the nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mesh.control.dashboard import metrics

SOURCE, DESTINATION = "source", "destination"
SIDECAR, GATEWAY, EXTERNAL = "sidecar", "gateway", "unknown"
GATEWAY_LABEL = "ingress"
GROUP_PREFIX = "app:"

Window = tuple[metrics.Scrape | None, metrics.Scrape]  # (older or None, newer) scrape of one proxy


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    namespace: str
    app: str = ""
    version: str = ""
    role: str = SIDECAR


@dataclass(slots=True)
class _Side:
    """One reporter's view of one edge: window counts (rates) and cumulative presence."""

    ever: float = 0.0  # cumulative requests in the newer scrape: the edge exists
    count: float = 0.0
    errors: float = 0.0
    mtls: float = 0.0
    mtls_ever: float = 0.0
    seconds: float = 0.0  # longest window among the proxies reporting it
    service: str = ""
    codes: dict[str, float] = field(default_factory=dict)
    series: list[metrics.Series] = field(default_factory=list)


def build(workloads: Iterable[Workload], windows: Mapping[str, Window]) -> dict:
    """{"nodes", "groups", "edges"} as the page draws them; rates are per second over each window."""
    sides: dict[tuple[str, str], dict[str, _Side]] = {}
    for older, newer in windows.values():
        _collect(sides, older, newer)
    edges = [_edge(src, dst, by_reporter) for (src, dst), by_reporter in sorted(sides.items())]
    _shares(edges)
    nodes = {w.name: _node(w) for w in workloads}
    for edge in edges:
        for end in (edge["source"], edge["target"]):
            nodes.setdefault(end, _node(Workload(end, metrics.UNKNOWN, role=EXTERNAL)))
    for node in nodes.values():
        inbound = [e for e in edges if e["target"] == node["id"]]
        node["rps"] = round(sum(e["rps"] for e in inbound), 3)
        node["errorRate"] = _ratio(sum(e["rps"] * e["errorRate"] for e in inbound), node["rps"])
    apps = sorted({n["app"] for n in nodes.values() if n.get("parent")})
    return {
        "nodes": [nodes[name] for name in sorted(nodes)],
        "groups": [{"id": GROUP_PREFIX + app, "label": app} for app in apps],
        "edges": edges,
    }


def _collect(sides: dict[tuple[str, str], dict[str, _Side]], older: metrics.Scrape | None,
             newer: metrics.Scrape) -> None:
    changes = metrics.delta(older, newer) if older is not None else {}
    seconds = newer.at - older.at if older is not None else 0.0
    for key, total in newer.series.items():
        labels = dict(key)
        reporter, dst = labels.get("reporter"), labels.get("destination_workload", metrics.UNKNOWN)
        if reporter not in (SOURCE, DESTINATION) or dst == metrics.UNKNOWN:
            continue  # no endpoint was chosen (no route, overflow before pick): no workload to draw
        pair = (labels.get("source_workload", metrics.UNKNOWN), dst)
        side = sides.setdefault(pair, {}).setdefault(reporter, _Side())
        secured = _secured(reporter, labels)
        side.ever += total.count
        side.mtls_ever += total.count if secured else 0.0
        side.service = side.service or labels.get("destination_service", "")
        side.seconds = max(side.seconds, seconds)
        change = changes.get(key)
        if change is None or change.count <= 0:
            continue
        code = labels.get("response_code", "")
        side.count += change.count
        side.errors += change.count if code.startswith("5") else 0.0
        side.mtls += change.count if secured else 0.0
        side.codes[code] = side.codes.get(code, 0.0) + change.count
        side.series.append(change)


def _secured(reporter: str, labels: Mapping[str, str]) -> bool:
    if reporter == DESTINATION:
        return labels.get("connection_security_policy") == "mutual_tls"
    return labels.get("destination_principal", metrics.UNKNOWN) != metrics.UNKNOWN


def _edge(src: str, dst: str, by_reporter: Mapping[str, _Side]) -> dict:
    source = by_reporter.get(SOURCE)
    side = source if source is not None and (source.ever > 0 or DESTINATION not in by_reporter) \
        else by_reporter[DESTINATION]
    # mTLS is the server's word when it reported; the client only knows the identity it checked.
    secure = by_reporter.get(DESTINATION, side)
    rate = side.count / side.seconds if side.seconds > 0 else 0.0
    buckets = metrics.merge_buckets(side.series)
    mtls_share = _ratio(secure.mtls, secure.count) if secure.count else _ratio(secure.mtls_ever, secure.ever)
    return {
        "id": f"{src}>{dst}",
        "source": src,
        "target": dst,
        "service": side.service,
        "reporter": SOURCE if side is source else DESTINATION,
        "rps": round(rate, 3),
        "requests": side.count,
        "errorRate": _ratio(side.errors, side.count),
        "p50": _ms(metrics.quantile(0.5, buckets)),
        "p99": _ms(metrics.quantile(0.99, buckets)),
        "mtls": mtls_share >= 0.5,
        "mtlsShare": mtls_share,
        "codes": {code: round(n / side.seconds, 3) for code, n in sorted(side.codes.items())} if side.seconds else {},
        "share": None,
    }


def _shares(edges: list[dict]) -> None:
    """Each edge's part of what its source sent to that service: the weighted split, as observed."""
    totals: dict[tuple[str, str], float] = {}
    for e in edges:
        totals[(e["source"], e["service"])] = totals.get((e["source"], e["service"]), 0.0) + e["rps"]
    for e in edges:
        total = totals[(e["source"], e["service"])]
        e["share"] = round(e["rps"] / total, 3) if total > 0 else None


def _node(w: Workload) -> dict:
    node = {"id": w.name, "label": w.version or w.name, "app": w.app or w.name, "version": w.version,
            "namespace": w.namespace, "role": w.role, "badges": []}
    if w.role == GATEWAY:
        node["label"] = GATEWAY_LABEL
    elif w.role == SIDECAR and w.app:
        node["parent"] = GROUP_PREFIX + w.app
    return node


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole > 0 else 0.0


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
