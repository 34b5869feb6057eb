"""AuthorizationPolicy: which requests a workload allows, denies or audits (action + rules of
from/to/when), selected by labels or a targetRef, and the `istio.io/dry-run` annotation.

Validation follows Istio's ValidateAuthorizationPolicy and the CRD's rules; the value syntax (IPs,
ports, service accounts, `when` keys, path templates) lives in `conditions.py`. `action: None` means
ALLOW; CUSTOM is valid Istio but refused on apply (`support.refuse_unsupported`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from mesh.api import conditions
from mesh.api.errors import invalid
from mesh.api.resource import DRY_RUN_ANNOTATION, SECURITY_GROUP, SECURITY_VERSIONS, Resource
from mesh.api.selection import PolicyTargetReference, TargetRefs, check_one_selection
from mesh.api.types import Model, WorkloadSelector

Action = Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"]
MAX_RULES = 512  # the CRD's maxItems for rules and for each rule's `from`

# Go's strconv.ParseBool, which Istio uses for the dry-run annotation.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _checked(check: Callable[[Sequence[str]], conditions.Problem]) -> Any:
    def validate(values: list[str]) -> list[str]:
        if problem := check(values):
            raise invalid(problem[1], at=problem[0])
        return values

    return Annotated[list[str], AfterValidator(validate)]


Values = _checked(conditions.check_not_empty)
IpBlocks = _checked(conditions.check_ips)
Ports = _checked(conditions.check_ports)
ServiceAccounts = _checked(conditions.check_service_accounts)
Paths = _checked(conditions.check_paths)


class Source(Model):
    """Peer and request identities of a request; set fields AND, values in a field OR."""

    principals: Values | None = None
    not_principals: Values | None = None
    request_principals: Values | None = None
    not_request_principals: Values | None = None
    namespaces: Values | None = None
    not_namespaces: Values | None = None
    ip_blocks: IpBlocks | None = None
    not_ip_blocks: IpBlocks | None = None
    remote_ip_blocks: IpBlocks | None = None
    not_remote_ip_blocks: IpBlocks | None = None
    service_accounts: ServiceAccounts | None = None
    not_service_accounts: ServiceAccounts | None = None

    @model_validator(mode="after")
    def _shape(self) -> Source:
        # The CRD tests presence (`has()`), so an empty list counts as set here.
        accounts = self.service_accounts is not None or self.not_service_accounts is not None
        identities = (self.principals, self.not_principals, self.namespaces, self.not_namespaces)
        if accounts and any(v is not None for v in identities):
            raise invalid("cannot set serviceAccounts with namespaces or principals")
        if not any(getattr(self, name) for name in type(self).model_fields):
            raise invalid("from.source must not be empty: set at least one field")
        return self


class Operation(Model):
    """What the request does; set fields AND, values in a field OR."""

    hosts: Values | None = None
    not_hosts: Values | None = None
    ports: Ports | None = None
    not_ports: Ports | None = None
    methods: Values | None = None
    not_methods: Values | None = None
    paths: Paths | None = None
    not_paths: Paths | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Operation:
        if not any(getattr(self, name) for name in type(self).model_fields):
            raise invalid("to.operation must not be empty: set at least one field")
        return self


class Condition(Model):
    """`when`: an Istio attribute (`key`) and the values it must (`values`) or must not have."""

    key: str
    values: list[str] | None = None
    not_values: list[str] | None = None

    @model_validator(mode="after")
    def _attribute(self) -> Condition:
        if not self.key:
            raise invalid("key must not be empty", at="key")
        if not self.values and not self.not_values:
            raise invalid(f"at least one of values or notValues must be set for key {self.key}")
        for field, values in (("values", self.values), ("notValues", self.not_values)):
            if problem := conditions.check_attribute(self.key, values or []):
                at, message = problem
                raise invalid(message, at=at if at == "key" else f"{field}{at}")
        return self


class RuleFrom(Model):
    source: Source


class RuleTo(Model):
    operation: Operation


class Rule(Model):
    """Matches when one `from`, one `to` and every `when` match; an empty rule `{}` always matches."""

    from_: Annotated[list[RuleFrom], Field(max_length=MAX_RULES)] | None = Field(default=None, alias="from")
    to: list[RuleTo] | None = None
    when: list[Condition] | None = None

    @field_validator("from_", "to")
    @classmethod
    def _not_empty(cls, items: list | None, info: ValidationInfo) -> list | None:
        if items is not None and not items:
            raise invalid(f"{'from' if info.field_name == 'from_' else 'to'} must not be empty")
        return items


class ExtensionProvider(Model):
    name: str | None = None


# CUSTOM rules are evaluated by an external authorizer that only sees the request, not identities.
_CUSTOM_UNSUPPORTED_SOURCE = (
    ("namespaces", "namespaces"),
    ("not_namespaces", "notNamespaces"),
    ("service_accounts", "serviceAccounts"),
    ("not_service_accounts", "notServiceAccounts"),
    ("principals", "principals"),
    ("not_principals", "notPrincipals"),
    ("request_principals", "requestPrincipals"),
    ("not_request_principals", "notRequestPrincipals"),
)
_CUSTOM_UNSUPPORTED_KEYS = ("source.namespace", "source.serviceAccount", "source.principal")


class AuthorizationPolicySpec(Model):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: TargetRefs | None = None
    action: Action | None = None
    provider: ExtensionProvider | None = None
    rules: Annotated[list[Rule], Field(max_length=MAX_RULES)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_selection(cls, data: Any) -> Any:
        return check_one_selection(data)

    @model_validator(mode="after")
    def _action(self) -> AuthorizationPolicySpec:
        if self.action == "CUSTOM":
            self._check_custom()
        elif self.provider is not None:
            raise invalid(
                f"provider must only be set with action CUSTOM, found {self.action or 'ALLOW'}", at="provider"
            )
        if self.action == "DENY" and self.rules is None:
            raise invalid(
                "DENY action without rules is meaningless as it will never be triggered, "
                "add an empty rule {} if you want it be triggered for every request",
                at="rules",
            )
        return self

    def _check_custom(self) -> None:
        if self.rules is None:
            raise invalid(
                "CUSTOM action without rules is meaningless as it will never be triggered, "
                "add an empty rule {} if you want it be triggered for every request",
                at="rules",
            )
        if self.provider is None or not self.provider.name:
            raise invalid("provider.name must not be empty for action CUSTOM", at="provider.name")
        for i, rule in enumerate(self.rules):
            for j, rule_from in enumerate(rule.from_ or []):
                for attr, field in _CUSTOM_UNSUPPORTED_SOURCE:
                    if getattr(rule_from.source, attr):
                        raise invalid(
                            f"{field} is currently not supported with CUSTOM action",
                            at=f"rules[{i}].from[{j}].source.{field}",
                        )
            for j, cond in enumerate(rule.when or []):
                if cond.key in _CUSTOM_UNSUPPORTED_KEYS or cond.key.startswith("request.auth."):
                    raise invalid(
                        f"{cond.key} is currently not supported with CUSTOM action",
                        at=f"rules[{i}].when[{j}].key",
                    )


def parse_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool; None when `text` is not a boolean."""
    return True if text in _TRUE else False if text in _FALSE else None


class AuthorizationPolicy(Resource):
    KIND = "AuthorizationPolicy"
    GROUP = SECURITY_GROUP
    VERSIONS = SECURITY_VERSIONS

    kind: Literal["AuthorizationPolicy"]
    # `spec: {}` (and no spec at all) is a valid policy: ALLOW with no rules, i.e. deny everything.
    spec: AuthorizationPolicySpec = Field(default_factory=AuthorizationPolicySpec)

    @model_validator(mode="after")
    def _dry_run_annotation(self) -> AuthorizationPolicy:
        value = self.metadata.annotations.get(DRY_RUN_ANNOTATION)
        if value is None:
            return self
        at = f"metadata.annotations.{DRY_RUN_ANNOTATION}"
        if self.spec.action not in (None, "ALLOW", "DENY"):
            raise invalid(
                f"the annotation {DRY_RUN_ANNOTATION} currently only supports action ALLOW/DENY, "
                f"found action {self.spec.action}",
                at=at,
            )
        if parse_bool(value) is None:
            raise invalid(
                f"invalid value {value!r} for annotation {DRY_RUN_ANNOTATION}: expected true or false", at=at
            )
        return self

    @property
    def dry_run(self) -> bool:
        """`istio.io/dry-run: "true"`: evaluate and report (shadow), never enforce."""
        return bool(parse_bool(self.metadata.annotations.get(DRY_RUN_ANNOTATION, "")))
