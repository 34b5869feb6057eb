"""Which config acts on which workload: the node badges and the "config in effect" of the side panel.

Pure over one `snapshot.Snapshot` (the control plane's current one, never live config): a VirtualService
marks the workloads of its hosts (`VS`) and, per route destination, the subset's workloads with their
weight (`50%`), a fault, timeout or retries on the service called; a mirror marks the mirror target; a
DestinationRule marks its host's (or subset's) workloads, `CB` when it sets connectionPool or
outlierDetection; a STRICT PeerAuthentication `mTLS`; an AuthorizationPolicy selecting the workload
`authz`. A gateway-bound VirtualService marks the gateway workloads. Next: mesh.control.dashboard.panel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mesh.control import registry, snapshot

MESH_GATEWAY = "mesh"


@dataclass(frozen=True, slots=True)
class Effect:
    """One resource acting on one workload: the badge it earns ("" for none) and the spec part that does it."""

    kind: str
    namespace: str
    name: str
    badge: str
    text: str  # the badge's detail: "90%", "delay 2s", "STRICT"
    snippet: Any  # the relevant part of the spec, as Istio YAML writes it


def effects(snap: snapshot.Snapshot, gateways: Sequence[str] = ()) -> dict[str, list[Effect]]:
    """workload name → the effects on it, in resource order."""
    out: dict[str, list[Effect]] = defaultdict(list)
    for vs in snap.virtual_services:
        _virtual_service(snap, vs, gateways, out)
    for rules in snap.destination_rules_by_host.values():
        for dr in rules:
            _destination_rule(snap, dr, out)
    _security(snap, out)
    return dict(out)


def badges(found: Iterable[Effect]) -> list[dict[str, str]]:
    """The distinct badges of a node, for its label: [{"badge", "text"}]."""
    seen: dict[tuple[str, str], None] = {}
    for e in found:
        if e.badge:
            seen.setdefault((e.badge, e.text), None)
    return [{"badge": b, "text": t} for b, t in seen]


def _virtual_service(snap: snapshot.Snapshot, vs: Any, gateways: Sequence[str],
                     out: dict[str, list[Effect]]) -> None:
    spec = vs.spec
    bound = spec.gateways or []
    if bound and MESH_GATEWAY not in bound:  # served by the ingress, not by sidecars
        for name in gateways:
            out[name].append(Effect(vs.kind, vs.namespace, vs.name, "VS", "gateway", _dump(spec)))
        return
    add = _adder(vs, out)
    for host in spec.hosts or ():
        for w in _service_workloads(snap, snap.resolve(host, vs.namespace)):
            add(w, "VS", "", {"hosts": spec.hosts})
    for route in spec.http or ():
        snippet = _dump(route)
        destinations = route.route or []
        weights = _weights([d.weight for d in destinations])
        for d, weight in zip(destinations, weights):
            host = snap.resolve(d.destination.host, vs.namespace)
            for w in _service_workloads(snap, host, d.destination.subset):
                # the share this subset gets: a split, or a pin to one version ("100%")
                pinned = len(destinations) > 1 or d.destination.subset is not None
                add(w, "route" if pinned else "", f"{weight:g}%" if pinned else "", snippet)
                for badge, text in _route_badges(route):
                    add(w, badge, text, snippet)
        for mirror in _mirrors(route):
            host = snap.resolve(mirror.host, vs.namespace)
            for w in _service_workloads(snap, host, mirror.subset):
                add(w, "mirror", "target", snippet)


def _route_badges(route: Any) -> list[tuple[str, str]]:
    found = []
    fault = route.fault
    if fault is not None and fault.delay is not None:
        found.append(("fault", f"delay {_text(fault.delay.fixed_delay or fault.delay.exponential_delay)}"))
    if fault is not None and fault.abort is not None:
        found.append(("fault", f"abort {fault.abort.http_status or fault.abort.grpc_status}"))
    if route.timeout is not None:
        found.append(("timeout", _text(route.timeout)))
    if route.retries is not None:
        found.append(("retries", str(route.retries.attempts)))
    return found


def _text(duration: Any) -> str:
    return getattr(duration, "text", str(duration))


def _mirrors(route: Any) -> list[Any]:
    return ([route.mirror] if route.mirror is not None else []) + [m.destination for m in route.mirrors or ()]


def _destination_rule(snap: snapshot.Snapshot, dr: Any, out: dict[str, list[Effect]]) -> None:
    add = _adder(dr, out)
    host = snap.resolve(dr.spec.host, dr.namespace)
    top = dr.spec.traffic_policy
    for w in _service_workloads(snap, host):
        add(w, "CB" if _breaks(top) else "", "", _dump(dr.spec))
    for subset in dr.spec.subsets or ():
        if _breaks(subset.traffic_policy):
            for w in _service_workloads(snap, host, subset.name):
                add(w, "CB", subset.name, _dump(subset))


def _breaks(policy: Any) -> bool:
    return policy is not None and (policy.connection_pool is not None or policy.outlier_detection is not None)


def _security(snap: snapshot.Snapshot, out: dict[str, list[Effect]]) -> None:
    for w in snap.registry.workloads:
        mtls = snap.workload_mtls.get((w.namespace, w.name))
        if mtls is not None and mtls.mode == "STRICT":
            out[w.name].append(Effect("PeerAuthentication", w.namespace, "", "mTLS", "STRICT", {"mode": "STRICT"}))
        for namespace in dict.fromkeys((w.namespace, snap.root_namespace)):
            for policy in snap.authorization_policies.get(namespace, ()):
                selector = policy.spec.selector
                labels = (selector.match_labels or {}) if selector is not None else {}
                if registry.labels_match(labels, w.labels) and not _targets(policy.spec):
                    out[w.name].append(Effect(policy.kind, policy.namespace, policy.name, "authz",
                                              policy.spec.action or "ALLOW", _dump(policy.spec)))


def _targets(spec: Any) -> bool:
    """Policies attached to waypoints/Gateway-API gateways reach no Weir proxy."""
    return bool(getattr(spec, "target_ref", None) or getattr(spec, "target_refs", None))


def _service_workloads(snap: snapshot.Snapshot, host: str, subset: str | None = None) -> list[str]:
    service = snap.services_by_host.get(host)
    if service is None or service.selector is None:
        return []
    labels: Mapping[str, str] | None = None
    if subset:
        labels = _subset_labels(snap, host, subset)
        if labels is None:
            return []  # an undefined subset routes nowhere
    return [w.name for w in snap.select_workloads(service.namespace, service.selector, labels)]


def _subset_labels(snap: snapshot.Snapshot, host: str, name: str) -> Mapping[str, str] | None:
    for dr in snap.destination_rules_by_host.get(host, ()):
        for subset in dr.spec.subsets or ():
            if subset.name == name:
                return subset.labels or {}
    return None


def _weights(weights: list[int | None]) -> list[float]:
    """Route weights in percent: relative (weight / sum); one destination alone takes everything."""
    if len(weights) == 1:
        return [100.0]
    values = [w or 0 for w in weights]
    total = sum(values)
    return [round(100.0 * v / total, 1) if total else 0.0 for v in values]


def _adder(resource: Any, out: dict[str, list[Effect]]):
    def add(workload: str, badge: str, text: str, snippet: Any) -> None:
        out[workload].append(Effect(resource.kind, resource.namespace, resource.name, badge, text, snippet))
    return add


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
