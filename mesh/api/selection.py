"""Which workloads a security policy applies to: a label `selector` (`types.WorkloadSelector`), or a
`targetRef`/`targetRefs` naming a Service, ServiceEntry, Gateway or GatewayClass; at most one of them.

Shared by `authorizationpolicy.py` and `requestauthentication.py` (PeerAuthentication has only a
selector). Istio's rules: the CRD's patterns and CEL rules plus `validatePolicyTargetReference`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from mesh.api.errors import invalid
from mesh.api.types import Model

_GROUP = re.compile(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KIND = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")

# (group, kind) a policy may target; "" is the core group. Versions are not checked, as in Istio.
ALLOWED_TARGETS = frozenset(
    {
        ("", "Service"),
        ("networking.istio.io", "ServiceEntry"),
        ("gateway.networking.k8s.io", "Gateway"),
        ("gateway.networking.k8s.io", "GatewayClass"),
    }
)
MAX_TARGET_REFS = 16

# Spec keys that select workloads, as written in YAML (camelCase) or by field name.
_SELECTION_KEYS = {
    "selector": "selector",
    "targetRef": "targetRef",
    "target_ref": "targetRef",
    "targetRefs": "targetRefs",
    "target_refs": "targetRefs",
}


class PolicyTargetReference(Model):
    """`istio.type.v1beta1.PolicyTargetReference`: a resource in the policy's own namespace."""

    group: str = ""
    kind: str
    name: str
    namespace: str | None = None

    @field_validator("group")
    @classmethod
    def _group(cls, group: str) -> str:
        if len(group) > 253 or not _GROUP.match(group):
            raise invalid(f"invalid group {group!r}: must be empty (core) or a lower-case DNS subdomain")
        return group

    @field_validator("kind")
    @classmethod
    def _kind(cls, kind: str) -> str:
        if not kind:
            raise invalid("kind must not be empty")
        if len(kind) > 63 or not _KIND.match(kind):
            raise invalid(f"invalid kind {kind!r}: must be letters, digits and '-', starting with a letter")
        return kind

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name:
            raise invalid("name must not be empty")
        if len(name) > 253:
            raise invalid("name must be at most 253 characters")
        return name

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, namespace: str | None) -> str | None:
        if namespace:
            raise invalid(f"namespace {namespace!r}: cross namespace referencing is not currently supported")
        return namespace

    @model_validator(mode="after")
    def _allowed(self) -> PolicyTargetReference:
        group = "" if self.group == "core" else self.group
        if (group, self.kind) not in ALLOWED_TARGETS:
            allowed = ", ".join(f"{g or 'core'}/{k}" for g, k in sorted(ALLOWED_TARGETS))
            raise invalid(
                f"targetRef must be to one of {allowed}, but was {self.group or 'core'}/{self.kind}"
            )
        return self


TargetRefs = Annotated[list[PolicyTargetReference], Field(max_length=MAX_TARGET_REFS)]


def check_one_selection(data: Any) -> Any:
    """A `mode="before"` spec check: selector, targetRef and targetRefs exclude each other.

    Run before the fields so that this, not a problem inside one of them, is the error reported."""
    if isinstance(data, dict):
        given = sorted(
            {_SELECTION_KEYS[k] for k, v in data.items() if k in _SELECTION_KEYS and v is not None}
        )
        if len(given) > 1:
            raise invalid(f"only one of targetRefs or selector can be set, found {' and '.join(given)}")
    return data
