"""AuthorizationPolicy in the data plane: a view's policies compiled into matchers, and the decision.

`compile_policies` runs once per view; `decide` is a pure function of those matchers and one request's
attributes (`Request`), returning a `Decision` that says allow or deny, which policy decided, whether an
AUDIT policy matched and what the dry-run policies would have done. `mesh.proxy.access` gathers the
attributes, calls `decide` and answers 403. Semantics are Istio's, as Envoy's RBAC filters execute them:
AUDIT, then DENY, then ALLOW; values are exact, "prefix*", "*suffix" or "*" (any non-empty value), paths
also Envoy URI templates (`mesh.proxy.authz_values`);
a `not_` field matches when none of its values do, so a missing attribute (plaintext: no principal)
matches every `not_` field and no positive one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from mesh.proxy.authz_values import Hosts, IpBlocks, Paths, Ports, Strings
from mesh.view import model, security

Check = Callable[["Request"], bool]
SPIFFE = "spiffe://"
_CLAIM_KEY = re.compile(r"\[([^\]]*)\]")  # request.auth.claims[a][b] → ("a", "b")


class Request:
    """What a policy can look at, gathered by `mesh.proxy.access` (or built by hand in tests).

    `principal` is the peer's SPIFFE ID without "spiffe://" (None on plaintext); `port` the destination
    port (inbound: the workload's port; gateway: the Gateway server port); `auth` the verified JWT
    (`mesh.proxy.jwt_authn.Authenticated`) or None; `sni` the server name the client sent ("" for none).
    `local_ip` may be a callable, read only when a `when` condition asks for it."""

    __slots__ = ("method", "path", "host", "authority", "port", "headers", "principal", "peer_ip", "auth",
                 "_local_ip", "sni", "_remote_ip", "_namespace", "use_remote_address", "trusted_hops")

    def __init__(self, method: str, path: str, host: str, port: int | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None, principal: str | None = None,
                 peer_ip: str = "", auth=None, authority: str | None = None,
                 local_ip: str | Callable[[], str] = "", sni: str = "",
                 use_remote_address: bool = False, trusted_hops: int = 0) -> None:
        self.method = method
        self.path = path  # already normalized, without the query
        self.host = host  # lower case, no port
        self.authority = authority if authority is not None else host  # the Host header, lower case
        self.port = port
        self.headers = headers or []
        self.principal = principal
        self.peer_ip = peer_ip
        self.auth = auth
        self._local_ip = local_ip
        self.sni = sni
        self._remote_ip: str | None = None
        self._namespace: str | None | bool = False
        # How `remote_ip` trusts X-Forwarded-For: a gateway (Envoy's use_remote_address, as Istio sets it on
        # gateways) and the gateway's `numTrustedProxies`; sidecars trust the rightmost entry.
        self.use_remote_address = use_remote_address
        self.trusted_hops = trusted_hops

    @property
    def namespace(self) -> str | None:
        """The namespace in the peer's SPIFFE ID ("<trust domain>/ns/<ns>/sa/<sa>")."""
        if self._namespace is False:
            principal = self.principal
            start = principal.find("/ns/") if principal else -1
            if start < 0:
                self._namespace = None
            else:
                end = principal.find("/", start + 4)
                self._namespace = principal[start + 4:] if end < 0 else principal[start + 4:end]
        return self._namespace

    @property
    def service_account(self) -> str | None:
        """`<ns>/<sa>` of the peer's SPIFFE ID: what `when: source.serviceAccount` compares (compiled so)."""
        principal, namespace = self.principal, self.namespace
        start = principal.find("/sa/") if principal and namespace else -1
        return f"{namespace}/{principal[start + 4:]}" if start >= 0 else None

    @property
    def remote_ip(self) -> str:
        """The original client, as Envoy finds its trusted client address: X-Forwarded-For read from the
        right, `trusted_hops` entries skipped. A gateway counts the connection's peer as the last entry (it
        appends it before forwarding), so with no trusted hops the client is the peer and nothing a client
        writes in the header is believed; a sidecar takes the rightmost entry, the one its gateway appended.
        Too few entries: the peer."""
        if self._remote_ip is None:
            forwarded = self.header("x-forwarded-for")
            hops = [hop.strip() for hop in forwarded.split(",")] if forwarded else []
            if self.use_remote_address:
                hops.append(self.peer_ip)
            nth = self.trusted_hops + 1
            self._remote_ip = (hops[-nth] if len(hops) >= nth else "") or self.peer_ip
        return self._remote_ip

    @property
    def local_ip(self) -> str:
        if callable(self._local_ip):
            self._local_ip = self._local_ip()
        return self._local_ip

    def header(self, name: str) -> str | None:
        """Every value of a header, joined with "," as Envoy merges duplicates; None when absent."""
        key = name.lower().encode("latin-1")
        values = [value for header, value in self.headers if header == key]
        if not values:
            return None
        return (values[0] if len(values) == 1 else b",".join(values)).decode("latin-1")


def _field(read: Callable[[Request], object], values, not_values, make) -> Check | None:
    """One field: any of `values` (when given) and none of `not_values` must match what `read` returns."""
    if not values and not not_values:
        return None
    positive = make(values) if values else None
    negative = make(not_values) if not_values else None
    if negative is None:
        return lambda request: positive.match(read(request))
    if positive is None:
        return lambda request: not negative.match(read(request))

    def both(request: Request) -> bool:
        value = read(request)
        return positive.match(value) and not negative.match(value)

    return both


def _all(checks: list[Check | None]) -> tuple[Check, ...]:
    return tuple(check for check in checks if check is not None)


def _auth(name: str) -> Callable[[Request], object]:
    return lambda request: getattr(request.auth, name) if request.auth is not None else None


def _source(source: model.AuthzSource) -> tuple[Check, ...]:
    s = source
    return _all([
        _field(lambda r: r.principal, s.principals, s.not_principals, Strings),
        _field(_auth("principal"), s.request_principals, s.not_request_principals, Strings),
        _field(lambda r: r.namespace, s.namespaces, s.not_namespaces, Strings),
        _field(lambda r: r.peer_ip, s.ip_blocks, s.not_ip_blocks, IpBlocks),
        _field(lambda r: r.remote_ip, s.remote_ip_blocks, s.not_remote_ip_blocks, IpBlocks),
    ])


def _operation(operation: model.AuthzOperation) -> tuple[Check, ...]:
    o = operation
    return _all([
        _field(lambda r: r, o.hosts, o.not_hosts, Hosts),
        _field(lambda r: r.port, o.ports, o.not_ports, Ports),
        _field(lambda r: r.method, o.methods, o.not_methods, Strings),
        _field(lambda r: r.path, o.paths, o.not_paths, Paths),
    ])


def _claim(path: tuple[str, ...]) -> Callable[[Request], object]:
    def read(request: Request) -> object:
        value = request.auth.claims if request.auth is not None else None
        for name in path:
            if not isinstance(value, dict):
                return None
            value = value.get(name)
        return value

    return read


def _condition(condition: model.AuthzCondition, action: str) -> Check:
    key = condition.key
    values, not_values = condition.values, condition.not_values
    read: Callable[[Request], object] | None = None
    make = Strings
    if key.startswith("request.headers[") and key.endswith("]"):
        name = key[len("request.headers["):-1]
        read = lambda r: r.header(name)  # noqa: E731 - one small reader per key
    elif key.startswith("request.auth.claims["):
        names = tuple(_CLAIM_KEY.findall(key[len("request.auth.claims"):]))
        read = _claim(names)
    elif key in ("source.ip", "remote.ip", "destination.ip"):
        make = IpBlocks
        read = {"source.ip": lambda r: r.peer_ip, "remote.ip": lambda r: r.remote_ip,
                "destination.ip": lambda r: r.local_ip}[key]
    elif key == "destination.port":
        make = Ports
        read = lambda r: r.port  # noqa: E731
    else:
        read = {
            "source.principal": lambda r: r.principal,
            "source.namespace": lambda r: r.namespace,
            "source.serviceAccount": lambda r: r.service_account,
            "request.auth.principal": _auth("principal"),
            "request.auth.audiences": _auth("audiences"),
            "request.auth.presenter": _auth("presenter"),
            "connection.sni": lambda r: r.sni,
        }.get(key)
    if read is None:
        # A key this proxy cannot evaluate (experimental.*): like Istio with fields a filter chain cannot
        # see, an ALLOW (or AUDIT) rule using it never matches and a DENY rule ignores it (fails closed).
        return (lambda request: True) if action == security.DENY else (lambda request: False)
    return _field(read, values, not_values, make) or (lambda request: True)


# -- rules and policies --------------------------------------------------------------------------------
class CompiledRule:
    __slots__ = ("sources", "operations", "conditions")

    def __init__(self, rule: model.AuthzRule, action: str) -> None:
        self.sources = tuple(_source(s) for s in rule.sources)
        self.operations = tuple(_operation(o) for o in rule.operations)
        self.conditions = tuple(_condition(c, action) for c in rule.conditions)

    def match(self, request: Request) -> bool:
        """Any source AND any operation AND every condition; an empty list is no constraint."""
        if self.sources and not any(all(c(request) for c in checks) for checks in self.sources):
            return False
        if self.operations and not any(all(c(request) for c in checks) for checks in self.operations):
            return False
        return all(c(request) for c in self.conditions)


class CompiledPolicy:
    __slots__ = ("name", "rules")

    def __init__(self, spec: model.AuthzPolicy) -> None:
        self.name = spec.name
        self.rules = tuple(CompiledRule(rule, spec.action) for rule in spec.rules)

    def match(self, request: Request) -> bool:
        """A policy matches when one of its rules does: no rules, no match (`spec: {}` denies all)."""
        return any(rule.match(request) for rule in self.rules)


def _first(policies: tuple[CompiledPolicy, ...], request: Request) -> str | None:
    for policy in policies:
        if policy.match(request):
            return policy.name
    return None


class Policies:
    """A view's policies by action; dry-run ones apart (Envoy's shadow rules)."""

    __slots__ = ("audit", "deny", "allow", "shadow_deny", "shadow_allow", "enforced")

    def __init__(self, specs: Iterable[model.AuthzPolicy]) -> None:
        groups: dict[tuple[str, bool], list[CompiledPolicy]] = {}
        for spec in specs:
            groups.setdefault((spec.action, spec.dry_run), []).append(CompiledPolicy(spec))
        self.audit = tuple(groups.get((security.AUDIT, False), ()))
        self.deny = tuple(groups.get((security.DENY, False), ()))
        self.allow = tuple(groups.get((security.ALLOW, False), ()))
        self.shadow_deny = tuple(groups.get((security.DENY, True), ()))
        self.shadow_allow = tuple(groups.get((security.ALLOW, True), ()))
        self.enforced = bool(self.deny or self.allow)  # a DENY or ALLOW filter exists: count allowed/denied

    def __repr__(self) -> str:
        return (f"<Policies audit={len(self.audit)} deny={len(self.deny)} allow={len(self.allow)} "
                f"dry-run={len(self.shadow_deny) + len(self.shadow_allow)}>")


def compile_policies(specs: Iterable[model.AuthzPolicy]) -> Policies | None:
    specs = tuple(specs)
    return Policies(specs) if specs else None


class Decision:
    """`allowed`; `policy`: the policy that decided ("" when no DENY matched and there is no ALLOW
    policy, or when no ALLOW policy matched); `audited`: the AUDIT policy that matched, or "";
    `shadow`: one verdict (True = allowed) per dry-run filter that ran, DENY's before ALLOW's."""

    __slots__ = ("allowed", "policy", "audited", "shadow")

    def __init__(self, allowed: bool, policy: str = "", audited: str = "", shadow: tuple[bool, ...] = ()) -> None:
        self.allowed = allowed
        self.policy = policy
        self.audited = audited
        self.shadow = shadow

    def __repr__(self) -> str:
        verdict = "allow" if self.allowed else "deny"
        return f"<Decision {verdict} policy={self.policy!r} audited={self.audited!r} shadow={self.shadow}>"


def decide(policies: Policies, request: Request) -> Decision:
    """Istio's order, as its Envoy filters run: AUDIT (marks only), DENY (any match denies), ALLOW (when
    ALLOW policies exist, one must match). Dry-run policies are evaluated where their filter sits and
    reported in `shadow`, never enforced; a request denied by DENY never reaches the ALLOW filter."""
    audited = (_first(policies.audit, request) or "") if policies.audit else ""
    shadow: tuple[bool, ...] = ()
    if policies.shadow_deny:
        shadow = (_first(policies.shadow_deny, request) is None,)
    if policies.deny:
        denied_by = _first(policies.deny, request)
        if denied_by is not None:
            return Decision(False, denied_by, audited, shadow)
    if policies.shadow_allow:
        shadow += (_first(policies.shadow_allow, request) is not None,)
    if not policies.allow:
        return Decision(True, "", audited, shadow)
    allowed_by = _first(policies.allow, request)
    return Decision(allowed_by is not None, allowed_by or "", audited, shadow)
