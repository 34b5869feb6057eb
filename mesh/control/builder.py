"""`build_proxy_view(snapshot, node)`: the pure compile step from an immutable snapshot to one proxy's view.

Sidecars get an inbound listener to their app and one outbound route table per service port (a virtual
host per service: its mesh-bound VirtualService's rules, or a default route); gateways get what
`mesh.control.gateways` builds. `mesh.control.routes` turns rules into routes, `mesh.control.clusters`
adds clusters and endpoints, `mesh.control.security` what the proxy enforces on what it receives. Output
is sorted, so the same snapshot gives a byte-identical view; `mesh.control.discovery` versions it and
`mesh.control.server` sends it.
"""

from __future__ import annotations

import logging
from typing import Any

from mesh.control import clusters, gateways, routes, security, snapshot
from mesh.control import node as node_mod
from mesh.view import model

log = logging.getLogger(__name__)

INBOUND_LISTENER_PORT = 15006  # Istio's defaults, when the node does not say
OUTBOUND_LISTENER_PORT = 15001


def build_proxy_view(snap: snapshot.Snapshot, node: node_mod.Node) -> model.ProxyView:
    if node.role == node_mod.GATEWAY:
        listeners, tables, refs = gateways.build(snap, node)
        extra_clusters, extra_endpoints = [], []
    else:
        listeners, tables, refs = _sidecar_outbound(snap, node)
        extra_clusters, extra_endpoints = [], []
        if node.app_port:
            cluster, endpoints = clusters.inbound_cluster(snap, node)
            port = node.ports.get("inbound", INBOUND_LISTENER_PORT)
            listeners.append(model.Listener("inbound", model.INBOUND, port, cluster=cluster.name))
            extra_clusters.append(cluster)
            extra_endpoints.append(endpoints)
    cluster_list, endpoint_list = clusters.build_clusters(snap, node, refs)
    return model.ProxyView(
        proxy=node.id,
        listeners=tuple(sorted(listeners, key=lambda x: (x.direction, x.port, x.name))),
        route_tables=tuple(sorted(tables, key=lambda t: t.name)),
        clusters=tuple(sorted(cluster_list + extra_clusters, key=lambda c: c.name)),
        endpoints=tuple(sorted(endpoint_list + extra_endpoints, key=lambda e: e.cluster)),
        outbound_policy=snap.outbound_policy,
        security=security.build(snap, node),
    )


def _sidecar_outbound(
    snap: snapshot.Snapshot, node: node_mod.Node
) -> tuple[list[model.Listener], list[model.RouteTable], set[routes.ClusterRef]]:
    services = clusters.visible_services(snap, node)
    refs: set[routes.ClusterRef] = set()
    tables = []
    for port in sorted({p.port for s in services for p in s.ports}):
        ctx = routes.RouteContext(snap, node, routes.MESH, port, refs)
        hosts = [_virtual_host(ctx, svc, port) for svc in services if svc.port(port) is not None]
        tables.append(model.RouteTable(str(port), tuple(sorted(hosts, key=lambda h: h.name))))
    port = node.ports.get("outbound", OUTBOUND_LISTENER_PORT)
    return [model.Listener("outbound", model.OUTBOUND, port)], tables, refs


def _virtual_host(ctx: routes.RouteContext, svc: snapshot.Service, port: int) -> model.VirtualHost:
    vs = mesh_virtual_service(ctx.snap, svc.host, ctx.node)
    built = routes.build_routes(ctx, vs) if vs is not None else ()
    if not built:  # no VirtualService, or none of its rules applies to this proxy (Istio: default route)
        built = (routes.default_route(ctx, svc, port),)
    return model.VirtualHost(f"{svc.host}:{port}", service_domains(svc, ctx.node.namespace), built)


def mesh_virtual_service(snap: snapshot.Snapshot, host: str, node: node_mod.Node) -> Any | None:
    """The VirtualService bound to `mesh` for `host`: an exact host beats the most specific wildcard;
    among several, the proxy's own namespace first, then by namespace/name (Istio: oldest first)."""
    candidates = [
        key for key, items in snap.virtual_services_by_host.items()
        if clusters.host_matches(key, host) and any(_mesh_visible(vs, node) for vs in items)
    ]
    if not candidates:
        return None
    best = max(candidates, key=lambda k: (k == host, len(k), k))
    chosen = sorted(
        (vs for vs in snap.virtual_services_by_host[best] if _mesh_visible(vs, node)),
        key=lambda vs: (vs.namespace != node.namespace, vs.namespace, vs.name),
    )
    if len(chosen) > 1:
        log.debug("host %s: %d VirtualServices, using %s", host, len(chosen), chosen[0].key)
    return chosen[0]


def _mesh_visible(vs: Any, node: node_mod.Node) -> bool:
    return routes.MESH in routes.bound_gateways(vs) and clusters.visible(vs.spec.export_to, vs.namespace, node.namespace)


def service_domains(svc: snapshot.Service, caller_namespace: str) -> tuple[str, ...]:
    """Kubernetes names of a service: FQDN, `name.ns.svc`, `name.ns`, and `name` for callers in its
    namespace only (as Istio). ServiceEntry hosts are used as written."""
    if svc.resolution != snapshot.FROM_REGISTRY:
        return (svc.host,)
    name, namespace = svc.host.split(".")[:2]
    domains = {svc.host, f"{name}.{namespace}.svc", f"{name}.{namespace}"}
    if namespace == caller_namespace:
        domains.add(name)
    return tuple(sorted(domains))
