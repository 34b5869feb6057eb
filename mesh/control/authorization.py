"""AuthorizationPolicy → `mesh.view.model.AuthzPolicy`: the rules of one policy, already selected for a
proxy by `mesh.control.security`.

The conversion keeps Istio's meaning and strings (principals, "prefix*" values, ports as strings); the
proxy evaluates them (CUSTOM, then DENY, then ALLOW; no ALLOW policy ⇒ allow). A policy with no rules
stays a policy with no rules: as an ALLOW (`spec: {}`) it denies everything. CUSTOM is refused at apply
and skipped here defensively. `serviceAccounts` ("sa" or "ns/sa") is Istio's shorthand for a principal
in any trust domain; it becomes the principal "*/ns/<ns>/sa/<sa>" (suffix match) that means the same.
"""

from __future__ import annotations

import logging
from typing import Any

from mesh.view import model
from mesh.view import security as view_security

log = logging.getLogger(__name__)

ACTIONS = frozenset({view_security.ALLOW, view_security.DENY, view_security.AUDIT})

SOURCE_SERVICE_ACCOUNT = "source.serviceAccount"  # `when` key; values "ns/sa" once compiled

_SOURCE_FIELDS = (
    "principals", "not_principals", "request_principals", "not_request_principals", "namespaces",
    "not_namespaces", "ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks",
)
_OPERATION_FIELDS = ("hosts", "not_hosts", "ports", "not_ports", "methods", "not_methods", "paths", "not_paths")


def compile_policy(policy: Any) -> model.AuthzPolicy | None:
    """One AuthorizationPolicy, or None when this proxy cannot enforce its action."""
    spec = policy.spec
    action = spec.action or view_security.ALLOW
    if action not in ACTIONS:
        log.warning("%s: action %s is not enforced by Weir proxies; policy skipped", policy.key, action)
        return None
    return model.AuthzPolicy(
        name=f"{policy.namespace}/{policy.name}",
        action=action,
        rules=tuple(_rule(r, policy.namespace) for r in spec.rules or ()),
        dry_run=bool(policy.dry_run),
    )


def _rule(rule: Any, namespace: str) -> model.AuthzRule:
    return model.AuthzRule(
        sources=tuple(_source(f.source, namespace) for f in rule.from_ or ()),
        operations=tuple(_operation(t.operation) for t in rule.to or ()),
        conditions=tuple(_condition(c, namespace) for c in rule.when or ()),
    )


def _condition(condition: Any, namespace: str) -> model.AuthzCondition:
    values, not_values = _strings(condition.values), _strings(condition.not_values)
    if condition.key == SOURCE_SERVICE_ACCOUNT:  # "sa" means the policy's namespace: say which
        values, not_values = _qualified(values, namespace), _qualified(not_values, namespace)
    return model.AuthzCondition(condition.key, values, not_values)


def _qualified(accounts: tuple[str, ...], namespace: str) -> tuple[str, ...]:
    return tuple(a if "/" in a else f"{namespace}/{a}" for a in accounts)


def _source(source: Any, namespace: str) -> model.AuthzSource:
    fields = {name: _strings(getattr(source, name, None)) for name in _SOURCE_FIELDS}
    fields["principals"] += _accounts(getattr(source, "service_accounts", None), namespace)
    fields["not_principals"] += _accounts(getattr(source, "not_service_accounts", None), namespace)
    return model.AuthzSource(**fields)


def _accounts(values: Any, namespace: str) -> tuple[str, ...]:
    """Istio's serviceAccountRegex: `sa` is in the policy's namespace; any trust domain matches."""
    out = []
    for value in values or ():
        ns, slash, sa = value.partition("/")
        ns, sa = (ns, sa) if slash else (namespace, value)
        out.append(f"*/ns/{ns}/sa/{sa}")
    return tuple(out)


def _operation(operation: Any) -> model.AuthzOperation:
    return model.AuthzOperation(**{name: _strings(getattr(operation, name, None)) for name in _OPERATION_FIELDS})


def _strings(values: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in values or ())
