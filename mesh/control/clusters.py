"""Clusters and their endpoints for one proxy: DestinationRule lookup, subsets, load balancing,
connection pool and outlier detection (compiled by `mesh.control.resilience`), upstream TLS
(`mesh.control.tls`; no `tls` anywhere leaves the cluster on auto mTLS).

One cluster per (service, port), one per (service, port, subset) of the DestinationRule that applies to
this proxy, and one for every destination a route names (so a view never points at a missing cluster:
an unknown host or subset, or a ServiceEntry host not exported to the proxy's namespace, gets a cluster
with no endpoints, i.e. a 503 like Istio's missing cluster). exportTo (`visible`) is applied here to
ServiceEntries and DestinationRules, in `mesh.control.builder` and `mesh.control.gateways` to
VirtualServices.
Endpoints of workloads that run a Weir sidecar (every registry workload) carry its SPIFFE identity and
whether its sidecar accepts mTLS on the endpoint's port (its PeerAuthentication is not DISABLE there);
ServiceEntry endpoints have no sidecar, and workloads a ServiceEntry selects get auto mTLS only when its
`location` is MESH_INTERNAL (Istio never originates auto mTLS to a MESH_EXTERNAL service, the default).
Called by `mesh.control.builder` after `mesh.control.routes` collected the references.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mesh.control import node as node_mod
from mesh.control import registry, resilience, security, snapshot, tls
from mesh.control.routes import ClusterRef
from mesh.view import model

log = logging.getLogger(__name__)

DEFAULT_RING_SIZE = 1024  # Envoy's minimum_ring_size default
_SIMPLE = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",  # deprecated alias
    "RANDOM": "RANDOM",
}
DEFAULT_POLICY = "LEAST_REQUEST"  # Istio's default when no loadBalancer is set


@dataclass(frozen=True, slots=True)
class Rule:
    """The DestinationRule(s) that apply to one host for one proxy (same-host rules merged)."""

    traffic_policy: Any
    subsets: tuple[Any, ...]
    keys: tuple[str, ...]

    def subset(self, name: str) -> Any | None:
        return next((s for s in self.subsets if s.name == name), None)


def visible(export_to: Iterable[str] | None, owner_namespace: str, namespace: str) -> bool:
    """Istio's exportTo: unset or `*` → everywhere; `.` → own namespace; names; `~` → nowhere."""
    values = list(export_to or ())
    if not values or "*" in values:
        return True
    return namespace in values or ("." in values and namespace == owner_namespace)


def host_matches(pattern: str, host: str) -> bool:
    if pattern == host or pattern == "*":
        return True
    return pattern.startswith("*") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1


def find_rule(snap: snapshot.Snapshot, host: str, service_namespace: str, node: node_mod.Node) -> Rule | None:
    """Istio's lookup: the proxy's namespace, then the service's, then the root namespace; within one,
    an exact host beats the most specific wildcard. Rules for the same host in one namespace merge."""
    index = snap.destination_rules_by_host
    for ns in dict.fromkeys((node.namespace, service_namespace, snap.root_namespace)):
        keys = [k for k in index if host_matches(k, host) and any(_applies(dr, ns, node) for dr in index[k])]
        if keys:
            best = max(keys, key=lambda k: (k == host, len(k), k))
            return _merge([dr for dr in index[best] if _applies(dr, ns, node)])
    return None


def _applies(dr: Any, namespace: str, node: node_mod.Node) -> bool:
    if dr.namespace != namespace or not visible(dr.spec.export_to, dr.namespace, node.namespace):
        return False
    selector = dr.spec.workload_selector
    if selector is not None and selector.match_labels:
        return dr.namespace == node.namespace and registry.labels_match(selector.match_labels, node.labels)
    return True


def _merge(rules: list[Any]) -> Rule:
    subsets: dict[str, Any] = {}
    for dr in rules:  # sorted by (namespace, name): the first rule's policy and subsets win
        for s in dr.spec.subsets or ():
            subsets.setdefault(s.name, s)
    policy = next((dr.spec.traffic_policy for dr in rules if dr.spec.traffic_policy is not None), None)
    return Rule(policy, tuple(subsets.values()), tuple(dr.key for dr in rules))


def effective_setting(policy: Any, subset_policy: Any, port: int, name: str) -> Any:
    """Istio's MergeSubsetTrafficPolicy for one section (`load_balancer`, `connection_pool`,
    `outlier_detection`, `tls`): top level, its port level, then the subset's top level and port level.
    A set section replaces the one before it whole (no field-by-field merge). Port-level settings do not
    inherit: a matching port entry without the section means the default."""
    setting = None
    for p in (policy, subset_policy):
        if p is None:
            continue
        if getattr(p, name) is not None:
            setting = getattr(p, name)
        for pls in p.port_level_settings or ():
            if pls.port is not None and pls.port.number == port:
                setting = getattr(pls, name)
                break
    return setting


def load_balancer(settings: Any) -> tuple[model.LoadBalancer, bool]:
    """api LoadBalancerSettings → (view LoadBalancer, passthrough?)."""
    if settings is None:
        return model.LoadBalancer(policy=DEFAULT_POLICY), False
    ch = settings.consistent_hash
    if ch is not None:
        cookie = ch.http_cookie
        attributes = tuple((a.name, a.value or "") for a in cookie.attributes or ()) if cookie else ()
        ring = (ch.ring_hash.minimum_ring_size if ch.ring_hash else None) or ch.minimum_ring_size
        ring = ring or (ch.maglev.table_size if ch.maglev else None) or DEFAULT_RING_SIZE
        return model.LoadBalancer(
            policy="RING_HASH",
            hash_header=ch.http_header_name.lower() if ch.http_header_name else None,
            hash_cookie=cookie.name if cookie else None,
            hash_cookie_path=cookie.path if cookie else None,
            hash_cookie_ttl=cookie.ttl.seconds if cookie and cookie.ttl is not None else None,
            hash_cookie_attributes=attributes,
            hash_source_ip=bool(ch.use_source_ip),
            hash_query_parameter=ch.http_query_parameter_name,
            ring_size=ring,
        ), False
    if settings.simple == "PASSTHROUGH":
        return model.LoadBalancer(policy=DEFAULT_POLICY), True
    return model.LoadBalancer(policy=_SIMPLE.get(settings.simple or "", DEFAULT_POLICY)), False


def wanted_clusters(
    snap: snapshot.Snapshot, node: node_mod.Node, refs: Iterable[ClusterRef], rules: dict[str, Rule | None]
) -> list[ClusterRef]:
    out = set(refs)
    for svc in visible_services(snap, node):
        rule = _rule(snap, svc, node, rules)
        for p in svc.ports:
            out.add(ClusterRef(svc.host, p.port))
            for s in rule.subsets if rule else ():
                out.add(ClusterRef(svc.host, p.port, s.name))
    return sorted(out, key=lambda r: r.name)


def exported(svc: snapshot.Service, namespace: str) -> bool:
    """Whether proxies in `namespace` see the service: a ServiceEntry's exportTo; registry Services are
    exported everywhere (Kubernetes' `networking.istio.io/exportTo` annotation is not read)."""
    return svc.entry is None or visible(svc.entry.spec.export_to, svc.namespace, namespace)


def visible_services(snap: snapshot.Snapshot, node: node_mod.Node) -> list[snapshot.Service]:
    return [s for s in snap.services if exported(s, node.namespace)]


def build_clusters(
    snap: snapshot.Snapshot, node: node_mod.Node, refs: Iterable[ClusterRef]
) -> tuple[list[model.Cluster], list[model.ClusterEndpoints]]:
    clusters, assignments = [], []
    rules: dict[str, Rule | None] = {}  # per build: one DestinationRule lookup per host
    for ref in wanted_clusters(snap, node, refs, rules):
        cluster, endpoints = _cluster(snap, node, ref, rules)
        clusters.append(cluster)
        if endpoints:
            assignments.append(model.ClusterEndpoints(ref.name, endpoints))
    return clusters, assignments


def _rule(snap: snapshot.Snapshot, svc: snapshot.Service, node: node_mod.Node, rules: dict[str, Rule | None]):
    if svc.host not in rules:
        rules[svc.host] = find_rule(snap, svc.host, svc.namespace, node)
    return rules[svc.host]


def _cluster(
    snap: snapshot.Snapshot, node: node_mod.Node, ref: ClusterRef, rules: dict[str, Rule | None]
) -> tuple[model.Cluster, tuple[model.Endpoint, ...]]:
    svc = snap.services_by_host.get(ref.host)
    if svc is None or not exported(svc, node.namespace):  # a route to a host not exported here: Istio's 503
        log.debug("%s: no such service here; the cluster has no endpoints", ref.name)
        return model.Cluster(ref.name, model.EDS, ref.host, ref.port, ref.subset), ()
    rule = _rule(snap, svc, node, rules)
    subset = rule.subset(ref.subset) if rule and ref.subset else None
    if ref.subset and subset is None:
        log.debug("%s: subset %s is not defined by a DestinationRule", ref.name, ref.subset)
        return model.Cluster(ref.name, model.EDS, ref.host, ref.port, ref.subset), ()
    policy, subset_policy = rule.traffic_policy if rule else None, subset.traffic_policy if subset else None
    lb, passthrough = load_balancer(effective_setting(policy, subset_policy, ref.port, "load_balancer"))
    pool = resilience.connection_pool(effective_setting(policy, subset_policy, ref.port, "connection_pool"))
    outlier = resilience.outlier_detection(
        effective_setting(policy, subset_policy, ref.port, "outlier_detection")
    )
    upstream = tls.upstream_tls(effective_setting(policy, subset_policy, ref.port, "tls"))
    subset_labels = dict(subset.labels or {}) if subset else {}
    kind, endpoints = _endpoints(snap, svc, ref.port, subset_labels)
    if passthrough:
        kind = model.PASSTHROUGH
    return model.Cluster(ref.name, kind, ref.host, ref.port, ref.subset, lb, pool, outlier, upstream), endpoints


def _endpoints(
    snap: snapshot.Snapshot, svc: snapshot.Service, port: int, subset_labels: dict[str, str]
) -> tuple[str, tuple[model.Endpoint, ...]]:
    if svc.resolution == snapshot.NONE:
        return model.PASSTHROUGH, ()
    service_port = svc.port(port)
    target = (service_port.target_port or service_port.port) if service_port else port
    if svc.selector is not None or svc.resolution == snapshot.FROM_REGISTRY:
        workloads = snap.select_workloads(svc.namespace, svc.selector, subset_labels) if svc.selector else ()
        kind = model.DNS if svc.resolution == snapshot.DNS else model.EDS
        auto_mtls = not svc.mesh_external
        return kind, _sorted(_workload_endpoint(snap, w, target, auto_mtls) for w in workloads if w.ready)
    out = []
    for ep in svc.entry.spec.endpoints or ():
        labels = dict(ep.labels or {})
        if not registry.labels_match(subset_labels, labels):
            continue
        ep_port = (ep.ports or {}).get(service_port.name if service_port else "", target)
        out.append(model.Endpoint(
            address=ep.address or "", port=ep_port, namespace=svc.namespace,
            app=labels.get("app", "unknown"), version=labels.get("version", "unknown"), weight=ep.weight or 1,
        ))
    if svc.resolution == snapshot.DNS:
        if not out and not svc.entry.spec.endpoints:
            out = [model.Endpoint(address=svc.host, port=target, namespace=svc.namespace)]
        return model.DNS, _sorted(out)
    return model.EDS, _sorted(out)


def _workload_endpoint(
    snap: snapshot.Snapshot, w: registry.Workload, target_port: int, auto_mtls: bool = True
) -> model.Endpoint:
    """A registry workload. With a sidecar, its identity and auto mTLS (PeerAuthentication keyed by the
    workload's own port: the service's targetPort; `w.port` is where its sidecar listens locally);
    without one (a pod outside the mesh on Kubernetes), plaintext and no identity, as Istio's tlsMode.
    `auto_mtls` False (a MESH_EXTERNAL ServiceEntry) keeps it plaintext unless a DestinationRule asks."""
    return model.Endpoint(
        address=w.address,
        port=w.port,
        workload=w.name,
        namespace=w.namespace,
        app=w.labels.get("app", "unknown"),
        version=w.labels.get("version", "unknown"),
        identity=security.identity(snap, w) if w.sidecar else "",
        mtls=auto_mtls and w.sidecar and security.endpoint_mtls(snap, w, target_port),
    )


def _sorted(endpoints: Iterable[model.Endpoint]) -> tuple[model.Endpoint, ...]:
    return tuple(sorted(endpoints, key=lambda e: (e.address, e.port, e.workload)))


def inbound_cluster(snap: snapshot.Snapshot, node: node_mod.Node) -> tuple[model.Cluster, model.ClusterEndpoints]:
    """The sidecar's local app: `inbound|<workload port>||` → 127.0.0.1:<app port>.

    The cluster's port is the workload's port as policies name it (its Service's targetPort: what
    portLevelMtls and AuthorizationPolicy `ports` match); the endpoint is where the app really listens.
    On Kubernetes both are the container port; locally the app listens on its own loopback port."""
    app_port = node.app_port or 0
    owner = next(
        (s for s in snap.registry.services
         if s.namespace == node.namespace and s.selector and registry.labels_match(s.selector, node.labels)),
        None,
    )
    port = owner.ports[0].target_port if owner is not None and owner.ports else app_port
    name = f"inbound|{port}||"
    endpoint = model.Endpoint(
        address="127.0.0.1", port=app_port, workload=node.workload or "unknown", namespace=node.namespace,
        app=node.labels.get("app", "unknown"), version=node.labels.get("version", "unknown"),
    )
    cluster = model.Cluster(name, model.EDS, owner.fqdn if owner is not None else "", port, "",
                            model.LoadBalancer(policy="ROUND_ROBIN"))
    return cluster, model.ClusterEndpoints(name, (endpoint,))
