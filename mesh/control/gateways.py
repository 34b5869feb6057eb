"""Gateway proxies: Gateway servers → listeners, and VirtualServices bound to them → route tables.

For each Gateway whose selector matches the gateway proxy's labels (all namespaces), each HTTP server
becomes a listener on its port with route table `http.<port>`; servers sharing a port merge. An HTTPS
server that terminates TLS (SIMPLE, MUTUAL, ISTIO_MUTUAL) is an HTTP server too, its certificate one
entry of the listener's `tls` (chosen by SNI); `tls.httpsRedirect` on a plaintext server makes the
listener redirect to https. A VirtualService bound to the Gateway contributes its rules under the
domains where its hosts meet the server's hosts. Called by `mesh.control.builder`.

Simplifications against Istio (which builds one filter chain per server): a port's servers share one
route table whatever the SNI; a port is either TLS or plaintext (the first server decides, later ones
of the other kind are dropped with a warning); httpsRedirect holds for the whole port when any of its
servers asks for it. PASSTHROUGH/AUTO_PASSTHROUGH and TLS/TCP-protocol servers need TCP/TLS routing,
which Weir does not have: they are skipped with a warning, and `mesh.api.dropped_server` decides which,
so `meshctl analyze` and `apply` warn about the same servers (WEIR0001).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from mesh import api
from mesh.control import clusters, registry, routes, snapshot, tls
from mesh.control import node as node_mod
from mesh.view import model

log = logging.getLogger(__name__)


def table_name(port: int) -> str:
    return f"http.{port}"


def selected_gateways(snap: snapshot.Snapshot, node: node_mod.Node) -> list[Any]:
    """Gateways whose selector matches the proxy (no selector: the gateways of its own namespace)."""
    out = []
    for gw in snap.gateways:
        selector = gw.spec.selector
        if selector and registry.labels_match(selector, node.labels):
            out.append(gw)
        elif not selector and gw.namespace == node.namespace:
            out.append(gw)
    return out


def intersect(a: str, b: str) -> str | None:
    """The more specific of two host patterns when one covers the other (Istio's hosts intersection)."""
    if clusters.host_matches(b, a):
        return a
    if clusters.host_matches(a, b):
        return b
    return None


def _server_hosts(server: Any, vs_namespace: str, gw_namespace: str) -> list[str]:
    """The server's hosts a VirtualService in `vs_namespace` may use (`ns/host`, `./host`, `*/host`)."""
    out = []
    for entry in server.hosts:
        ns, slash, host = entry.partition("/")
        if not slash:
            ns, host = "*", entry
        if ns == "*" or ns == vs_namespace or (ns == "." and vs_namespace == gw_namespace):
            out.append(host)
    return out


def _domains(snap: snapshot.Snapshot, vs: Any, server: Any, gw: Any) -> list[str]:
    allowed = _server_hosts(server, vs.namespace, gw.namespace)
    out = set()
    for host in vs.spec.hosts or ():
        resolved = snap.resolve(host, vs.namespace)
        for server_host in allowed:
            both = intersect(resolved, server_host)
            if both is not None:
                out.add(both)
    return sorted(out)


def build(
    snap: snapshot.Snapshot, node: node_mod.Node
) -> tuple[list[model.Listener], list[model.RouteTable], set[routes.ClusterRef]]:
    servers: dict[int, list[tuple[Any, Any]]] = defaultdict(list)
    for gw in selected_gateways(snap, node):
        for server in gw.spec.servers:
            if _routable(gw, server):
                servers[server.port.number].append((gw, server))
    listeners, tables, refs = [], [], set()
    for port in sorted(servers):
        entries = _one_kind(servers[port])
        name = table_name(port)
        listeners.append(_listener(snap, name, port, entries))
        tables.append(model.RouteTable(name, _virtual_hosts(snap, node, port, entries, refs)))
    return listeners, tables, refs


def _routable(gw: Any, server: Any) -> bool:
    """Does the server carry HTTP that Weir routes (plaintext, or TLS terminated at the gateway)?"""
    dropped = api.dropped_server(server)
    if dropped is not None:
        field, value, why = dropped
        log.warning("%s: server on port %d ignored (%s %s): %s", gw.key, server.port.number, field, value,
                    why)
    return dropped is None


def _one_kind(entries: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """The servers of one port that agree with the first on TLS vs plaintext."""
    secure = tls.server_tls_mode(entries[0][1]) is not None
    kept = []
    for gw, server in entries:
        if (tls.server_tls_mode(server) is not None) == secure:
            kept.append((gw, server))
        else:
            log.warning("%s: server on port %d dropped: the port already serves %s", gw.key,
                        server.port.number, "TLS" if secure else "plaintext")
    return kept


def _listener(snap: snapshot.Snapshot, name: str, port: int, entries: list[tuple[Any, Any]]) -> model.Listener:
    credentials = snap.settings.credentials_dir
    certificates = tuple(
        tls.server_tls(gw.key, server, credentials) for gw, server in entries if tls.server_tls_mode(server)
    )
    redirect = any(server.tls is not None and server.tls.https_redirect for _, server in entries)
    return model.Listener(name, model.GATEWAY, port, route_table=name, tls=certificates, https_redirect=redirect)


def _virtual_hosts(
    snap: snapshot.Snapshot,
    node: node_mod.Node,
    port: int,
    entries: list[tuple[Any, Any]],
    refs: set[routes.ClusterRef],
) -> tuple[model.VirtualHost, ...]:
    by_domain: dict[str, list[model.Route]] = defaultdict(list)
    done: set[tuple[str, str]] = set()  # (vs key, domain): a VS reached through two servers counts once
    for vs in snap.virtual_services:
        bound = routes.bound_gateways(vs)
        for gw, server in entries:
            gw_key = f"{gw.namespace}/{gw.name}"
            # exportTo is checked against the gateway proxy's namespace, not the Gateway resource's (Istio)
            if gw_key not in bound or not clusters.visible(vs.spec.export_to, vs.namespace, node.namespace):
                continue
            domains = [d for d in _domains(snap, vs, server, gw) if (vs.key, d) not in done]
            if not domains:
                continue
            ctx = routes.RouteContext(snap, node, gw_key, port, refs)
            built = routes.build_routes(ctx, vs)
            for domain in domains:
                done.add((vs.key, domain))
                by_domain[domain].extend(built)
    return tuple(
        model.VirtualHost(f"{domain}:{port}", (domain,), tuple(by_domain[domain])) for domain in sorted(by_domain)
    )
