"""Access control on requests a proxy receives (sidecar inbound, gateway): JWT authentication, then
authorization, then the request goes on to routing (`mesh.proxy.forwarding`).

`compile_access` runs once per view (from `mesh.proxy.routing.CompiledView`) and returns None when the view
has no AuthorizationPolicy and no RequestAuthentication, so a proxy without them pays one attribute check.
`refused` is the thin layer: it gathers a request's attributes from the exchange and its connection, asks
`mesh.proxy.jwt_authn` and `mesh.proxy.authz` for their decisions, counts them, and answers 401/403 itself.
As in Istio, the path is normalized first (BASE) and the normalized path is also what goes upstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mesh.proxy import authz, jwt_authn, normalization, replies
from mesh.view import model

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange
    from mesh.proxy.forwarding import Forwarding


class Access:
    """A view's compiled security for received requests, and the destination port each listener reports."""

    __slots__ = ("jwt", "policies", "inbound_port", "gateway_ports")

    def __init__(self, spec: model.ProxyView, clock: Callable[[], float] = time.time) -> None:
        security = spec.security
        self.jwt = jwt_authn.JwtAuthenticator(security.jwt_rules, clock) if security.jwt_rules else None
        try:
            self.policies = authz.compile_policies(security.policies)
        except ValueError as exc:  # a port or CIDR that does not parse: NACK the view, keep the old one
            raise model.ViewError(f"authorization policy: {exc}") from None
        clusters = {c.name: c for c in spec.clusters}
        self.inbound_port: int | None = None
        self.gateway_ports: dict[str | None, int] = {}
        for listener in spec.listeners:
            if listener.direction == model.INBOUND and listener.cluster in clusters:
                self.inbound_port = clusters[listener.cluster].port or None  # the workload's (app) port
            elif listener.direction == model.GATEWAY:
                self.gateway_ports.setdefault(listener.route_table, listener.port)  # the Gateway server port

    def __repr__(self) -> str:
        return f"<Access jwt={self.jwt!r} policies={self.policies!r}>"


def compile_access(spec: model.ProxyView, clock: Callable[[], float] = time.time) -> Access | None:
    security = spec.security
    if not security.policies and not security.jwt_rules:
        return None
    return Access(spec, clock)


class Verdict:
    """What access control concluded about an exchange (`Exchange.access`): the verified JWT, if any, and
    the authorization decision (with its AUDIT mark), if policies ran."""

    __slots__ = ("auth", "decision")

    def __init__(self, auth: jwt_authn.Authenticated | None, decision: authz.Decision | None) -> None:
        self.auth = auth
        self.decision = decision

    @property
    def audited(self) -> bool:
        return self.decision is not None and bool(self.decision.audited)


def refused(forwarding: Forwarding, exchange: Exchange, access: Access) -> bool:
    """Authenticate, then authorize, one received request; True when it was answered here (400/401/403)."""
    head = exchange.head
    counters = forwarding.runtime.counters
    try:
        head.path = normalization.normalize_path(head.path)
    except normalization.PathRejected:
        exchange.reply_error(replies.BadRequest())
        return True
    auth = None
    if access.jwt is not None:
        auth, failure = access.jwt.authenticate(head)
        if failure is not None:
            counters.inc("jwt_authn_denied_total")
            exchange.extra_response_headers += _www_authenticate(exchange)
            exchange.reply_error(replies.Unauthenticated(failure))
            return True
        counters.inc("jwt_authn_allowed_total")
        if auth is not None:
            access.jwt.rewrite(head, auth)  # before authorization: Envoy's RBAC sees the rewritten headers
    decision = None
    policies = access.policies
    if policies is not None:
        decision = authz.decide(policies, request_attributes(forwarding, exchange, access, auth))
        _count(counters, policies, decision)
        if not decision.allowed:
            exchange.access = Verdict(auth, decision)
            exchange.reply_error(replies.Denied())
            return True
    exchange.access = Verdict(auth, decision)
    return False


def request_attributes(forwarding: Forwarding, exchange: Exchange, access: Access,
                       auth: jwt_authn.Authenticated | None) -> authz.Request:
    head = exchange.head
    conn = exchange.conn
    identity = conn.peer_identity
    if identity:
        principal = identity[len(authz.SPIFFE):] if identity.startswith(authz.SPIFFE) else identity
    else:
        principal = None
    gateway = forwarding.direction == model.GATEWAY
    port = access.gateway_ports.get(forwarding.table) if gateway else access.inbound_port
    return authz.Request(
        head.method, head.uri_path, head.host, port, head.headers, principal, conn.peer_ip, auth,
        authority=exchange.host_header.decode("latin-1").lower(), local_ip=lambda: _local_ip(conn), sni=conn.sni,
        use_remote_address=gateway, trusted_hops=forwarding.runtime.trusted_proxies if gateway else 0,
    )


def _local_ip(conn) -> str:
    transport = conn.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return sockname[0] if sockname else ""


def _count(counters, policies: authz.Policies, decision: authz.Decision) -> None:
    if policies.enforced:
        counters.inc("rbac_allowed_total" if decision.allowed else "rbac_denied_total")
    for allowed in decision.shadow:
        counters.inc("rbac_shadow_allowed_total" if allowed else "rbac_shadow_denied_total")
    if policies.audit:
        counters.inc("rbac_logged_total" if decision.audited else "rbac_not_logged_total")


def _www_authenticate(exchange: Exchange) -> bytes:
    """Envoy's challenge on a refused JWT: the request URL (no query) as the realm."""
    head = exchange.head
    host = exchange.host_header.replace(b"\r", b"").replace(b"\n", b"")
    return (b'www-authenticate: Bearer realm="' + head.scheme.encode("latin-1") + b"://" + host
            + head.uri_path.encode("latin-1") + b'", error="invalid_token"\r\n')
