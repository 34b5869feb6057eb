"""A tiny, test-only walk of a ProxyView: which route and which clusters a request would hit.

Route table by port (or name) → virtual host by domain (exact, longest `*.suffix`, `*`) → first route
whose match blocks accept the request → weighted clusters. Deliberately independent of mesh.proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import re2

from mesh.view import model


@dataclass
class Request:
    host: str
    path: str = "/"
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    scheme: str = "http"


def _string(m: model.StringMatch, value: str | None) -> bool:
    if value is None:
        return False
    pattern, text = (m.value.lower(), value.lower()) if m.ignore_case else (m.value, value)
    if m.kind == "exact":
        return text == pattern
    if m.kind == "prefix":
        return text.startswith(pattern)
    options = re2.Options()
    options.case_sensitive = not m.ignore_case
    return re2.fullmatch(m.value, value, options) is not None  # RE2, as the proxy and Envoy run it


def _key(k: model.KeyMatch, values: dict[str, str]) -> bool:
    value = values.get(k.name)
    ok = value is not None if k.match is None else _string(k.match, value)
    return not ok if k.invert else ok


def _block(m: model.RouteMatch, req: Request) -> bool:
    headers = {k.lower(): v for k, v in req.headers.items()}
    checks = [
        m.uri is None or _string(m.uri, req.path),
        m.method is None or _string(m.method, req.method),
        m.scheme is None or _string(m.scheme, req.scheme),
        m.authority is None or _string(m.authority, req.host),
        all(_key(k, headers) for k in m.headers),
        all(_key(k, req.query) for k in m.query_params),
    ]
    return all(checks)


def virtual_host(view: model.ProxyView, table: str, host: str) -> model.VirtualHost | None:
    tables = {t.name: t for t in view.route_tables}
    if table not in tables:
        return None
    exact, suffixes, star = {}, [], None
    for vh in tables[table].virtual_hosts:
        for d in vh.domains:
            if d == "*":
                star = star or vh
            elif d.startswith("*"):
                suffixes.append((d[1:], vh))
            else:
                exact.setdefault(d, vh)
    if host in exact:
        return exact[host]
    for suffix, vh in sorted(suffixes, key=lambda s: -len(s[0])):
        if host.endswith(suffix):
            return vh
    return star


def route(view: model.ProxyView, table: str | int, req: Request | str, **kw) -> model.Route | None:
    if isinstance(req, str):
        req = Request(req, **kw)
    vh = virtual_host(view, str(table), req.host)
    if vh is None:
        return None
    for r in vh.routes:
        if not r.matches or any(_block(m, req) for m in r.matches):
            return r
    return None


def weights(view: model.ProxyView, table: str | int, req: Request | str, **kw) -> dict[str, int]:
    """{cluster: weight} of the route the request hits ({} when no route)."""
    r = route(view, table, req, **kw)
    return {} if r is None else {w.cluster: w.weight for w in r.clusters}


def hit(view: model.ProxyView, table: str | int, req: Request | str, **kw) -> str | None:
    """The one cluster the request goes to (None without a route); fails on a weighted split."""
    w = {c: n for c, n in weights(view, table, req, **kw).items() if n > 0}
    assert len(w) <= 1, f"weighted split, not one cluster: {w}"
    return next(iter(w), None)


def cluster(view: model.ProxyView, name: str) -> model.Cluster:
    return next(c for c in view.clusters if c.name == name)


def endpoints(view: model.ProxyView, name: str) -> tuple[model.Endpoint, ...]:
    return next((a.endpoints for a in view.endpoints if a.cluster == name), ())
