"""VirtualService http rules → `mesh.view.model.Route`s for one proxy and one listener port.

Everything that depends on the caller is decided here, at build time: match blocks whose `sourceLabels`,
`sourceNamespace`, `gateways` or `port` exclude this proxy are dropped (a rule left with no block is
dropped). Destinations become Istio cluster names; `mesh.control.clusters` makes sure they exist.
Mirrors (`mirror`, `mirrors`) become `model.Mirror`s the same way. Timeouts, retries and faults are
compiled by `mesh.control.resilience`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh import api
from mesh.control import node as node_mod
from mesh.control import registry, resilience, snapshot
from mesh.view import model

log = logging.getLogger(__name__)

MESH = "mesh"
SINGLE_DESTINATION_WEIGHT = 100


def cluster_name(port: int, subset: str, host: str, direction: str = "outbound") -> str:
    return f"{direction}|{port}|{subset}|{host}"


@dataclass(frozen=True, slots=True)
class ClusterRef:
    host: str
    port: int
    subset: str = ""

    @property
    def name(self) -> str:
        return cluster_name(self.port, self.subset, self.host)


@dataclass(slots=True)
class RouteContext:
    """What one route table is built for; `refs` collects every cluster the routes point at."""

    snap: snapshot.Snapshot
    node: node_mod.Node
    gateway: str  # MESH for sidecars, "namespace/name" of the Gateway for gateway listeners
    port: int  # the listener/service port of the route table
    refs: set[ClusterRef] = field(default_factory=set)


def bound_gateways(vs: Any) -> frozenset[str]:
    return frozenset(api.gateway_ref(g, vs.namespace) for g in vs.spec.gateways or (MESH,))


def default_route(ctx: RouteContext, service: snapshot.Service, port: int) -> model.Route:
    ref = ClusterRef(service.host, port)
    ctx.refs.add(ref)
    return model.Route(name="default", clusters=(model.WeightedCluster(ref.name, SINGLE_DESTINATION_WEIGHT),))


def build_routes(ctx: RouteContext, vs: Any) -> tuple[model.Route, ...]:
    out = []
    for index, rule in enumerate(vs.spec.http or ()):
        if rule.delegate is not None:
            log.warning("%s: http[%d] delegates to %s; delegation is not supported", vs.key, index, rule.delegate.name)
            continue
        matches: tuple[model.RouteMatch, ...] = ()
        if rule.match:
            matches = tuple(_match(m) for m in rule.match if _applies(ctx, vs, m))
            if not matches:
                continue  # every block excludes this proxy: the rule does not exist for it
        out.append(_route(ctx, vs, index, rule, matches))
    return tuple(out)


def _applies(ctx: RouteContext, vs: Any, m: Any) -> bool:
    if m.source_labels and not registry.labels_match(m.source_labels, ctx.node.labels):
        return False
    if m.source_namespace and m.source_namespace != ctx.node.namespace:
        return False
    if m.port is not None and m.port != ctx.port:
        return False
    if m.gateways:
        return ctx.gateway in {api.gateway_ref(g, vs.namespace) for g in m.gateways}
    return True


def _route(ctx: RouteContext, vs: Any, index: int, rule: Any, matches: tuple[model.RouteMatch, ...]) -> model.Route:
    request, response = _header_ops(rule.headers)
    redirect = direct = rewrite = None
    if rule.redirect is not None:
        r = rule.redirect
        redirect = model.Redirect(
            uri=r.uri, authority=r.authority, port=r.port, scheme=r.scheme, status=r.redirect_code or 301,
            derive_port=r.derive_port or "",
        )
    if rule.direct_response is not None:
        direct = model.DirectResponse(rule.direct_response.status, _body(rule.direct_response.body))
    if rule.rewrite is not None:
        rw = rule.rewrite
        regex = (rw.uri_regex_rewrite.match, rw.uri_regex_rewrite.template) if rw.uri_regex_rewrite else None
        rewrite = model.Rewrite(uri=rw.uri, authority=rw.authority, uri_regex=regex)
    return model.Route(
        name=rule.name or f"{vs.namespace}/{vs.name}.{index}",
        matches=matches,
        clusters=_destinations(ctx, vs, rule.route or ()),
        redirect=redirect,
        direct_response=direct,
        rewrite=rewrite,
        request_headers=request,
        response_headers=response,
        timeout_s=resilience.timeout_seconds(rule.timeout),
        retries=resilience.retry_policy(rule.retries),
        fault=resilience.fault(rule.fault),
        mirrors=_mirrors(ctx, vs, rule) if rule.route else (),
        # Envoy's CORS filter does nothing on a redirect or a direct response.
        cors=_cors(rule.cors_policy) if rule.route else None,
    )


def _cors(policy: Any) -> model.Cors | None:
    """Istio's TranslateCORSPolicy: allowOrigins as matches (else the deprecated exact allowOrigin), the
    lists joined with ",", maxAge in seconds, unmatchedPreflights IGNORE → answer instead of forwarding."""
    if policy is None:
        return None
    if policy.allow_origins:  # proto3: an empty list is no list
        origins = tuple(_string_match(m) for m in policy.allow_origins)
    else:
        origins = tuple(model.StringMatch("exact", origin) for origin in policy.allow_origin or ())
    return model.Cors(
        origins=origins,
        allow_methods=",".join(policy.allow_methods or ()),
        allow_headers=",".join(policy.allow_headers or ()),
        expose_headers=",".join(policy.expose_headers or ()),
        max_age=str(round(policy.max_age.seconds)) if policy.max_age is not None else "",
        credentials=policy.allow_credentials,
        forward_unmatched=policy.unmatched_preflights != "IGNORE",
    )


def _destinations(ctx: RouteContext, vs: Any, route: Any) -> tuple[model.WeightedCluster, ...]:
    out = []
    for d in route:
        ref = destination_ref(ctx, d.destination, vs.namespace)
        ctx.refs.add(ref)
        weight = (d.weight or SINGLE_DESTINATION_WEIGHT) if len(route) == 1 else (d.weight or 0)
        request, response = _header_ops(d.headers)
        out.append(model.WeightedCluster(ref.name, weight, request, response))
    return tuple(out)


def _mirrors(ctx: RouteContext, vs: Any, rule: Any) -> tuple[model.Mirror, ...]:
    """Istio's `mirror` (percent: `mirrorPercentage`, else the deprecated `mirrorPercent`, else 100) and
    `mirrors` (each its `percentage`, else 100). A mirror at 0% is dropped, as Istio does."""
    wanted: list[tuple[Any, float]] = []
    if rule.mirror is not None:
        if rule.mirror_percentage is not None:
            percent = rule.mirror_percentage.value
        elif rule.mirror_percent is not None:
            percent = rule.mirror_percent
        else:
            percent = 100.0
        wanted.append((rule.mirror, float(percent)))
    for m in rule.mirrors or ():
        wanted.append((m.destination, float(m.percentage.value) if m.percentage is not None else 100.0))
    out = []
    for dest, percent in wanted:
        if percent <= 0:
            continue
        ref = destination_ref(ctx, dest, vs.namespace)
        ctx.refs.add(ref)
        out.append(model.Mirror(ref.name, percent))
    return tuple(out)


def destination_ref(ctx: RouteContext, dest: Any, namespace: str) -> ClusterRef:
    """Istio: the port defaults to the service's only port, else to the port of the route table."""
    host = ctx.snap.resolve(dest.host, namespace)
    port = dest.port.number if dest.port is not None and dest.port.number else None
    if port is None:
        service = ctx.snap.services_by_host.get(host)
        port = service.ports[0].port if service is not None and len(service.ports) == 1 else ctx.port
    return ClusterRef(host, port, dest.subset or "")


def _string_match(m: Any, ignore_case: bool = False) -> model.StringMatch | None:
    if m is None or m.is_empty:
        return None
    for kind in ("exact", "prefix", "regex"):
        value = getattr(m, kind)
        if value is not None:
            return model.StringMatch(kind, value, ignore_case)
    return None


def _key_matches(items: Mapping[str, Any] | None, invert: bool = False) -> tuple[model.KeyMatch, ...]:
    return tuple(
        model.KeyMatch(name.lower(), _string_match(m), invert)
        for name, m in sorted((items or {}).items())
    )


def _match(m: Any) -> model.RouteMatch:
    headers = _key_matches(m.headers) + _key_matches(m.without_headers, invert=True)
    return model.RouteMatch(
        uri=_string_match(m.uri, bool(m.ignore_uri_case)),
        scheme=_string_match(m.scheme),
        method=_string_match(m.method),
        authority=_string_match(m.authority),
        headers=headers,
        query_params=tuple(
            model.KeyMatch(name, _string_match(q)) for name, q in sorted((m.query_params or {}).items())
        ),
        port=None,  # decided above: a block for another port was dropped
    )


def _header_ops(headers: Any) -> tuple[model.HeaderOps, model.HeaderOps]:
    if headers is None:
        return model.NO_HEADER_OPS, model.NO_HEADER_OPS
    return _ops(headers.request), _ops(headers.response)


def _ops(ops: Any) -> model.HeaderOps:
    if ops is None:
        return model.NO_HEADER_OPS
    return model.HeaderOps(
        set=tuple(sorted((k.lower(), v) for k, v in (ops.set or {}).items())),
        add=tuple(sorted((k.lower(), v) for k, v in (ops.add or {}).items())),
        remove=tuple(sorted(k.lower() for k in ops.remove or ())),
    )


def _body(body: Any) -> str:
    if body is None:
        return ""
    if body.string is not None:
        return body.string
    try:
        return base64.b64decode(body.bytes or "", validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return body.bytes or ""
