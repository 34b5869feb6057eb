"""The Kubernetes envelope shared by every kind: apiVersion, kind, metadata, spec (status ignored),
and the resource key `Kind/namespace/name` used in errors, indexes and `meshctl get`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from mesh.api.errors import invalid
from mesh.api.hosts import is_dns_label
from mesh.api.types import Model, ScalarStr

NETWORKING_GROUP = "networking.istio.io"
SECURITY_GROUP = "security.istio.io"
NETWORKING_VERSIONS = ("v1", "v1beta1", "v1alpha3")
SECURITY_VERSIONS = ("v1", "v1beta1")
DRY_RUN_ANNOTATION = "istio.io/dry-run"
DEFAULT_NAMESPACE = "default"

_MAX_NAME_LEN = 253


class ObjectMeta(Model):
    """Kubernetes ObjectMeta. Weir uses name, namespace, labels and annotations; the server-set
    fields are accepted (so `kubectl get -o yaml` output loads) and carried untouched."""

    name: str
    namespace: str | None = None
    labels: dict[str, ScalarStr] = Field(default_factory=dict)
    annotations: dict[str, ScalarStr] = Field(default_factory=dict)
    generate_name: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Any = None
    deletion_timestamp: Any = None
    deletion_grace_period_seconds: int | None = None
    owner_references: list[dict[str, Any]] | None = None
    finalizers: list[str] | None = None
    managed_fields: list[dict[str, Any]] | None = None
    self_link: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        # DNS-1123 subdomain, as the API server requires for custom resources.
        if not name or len(name) > _MAX_NAME_LEN or not all(is_dns_label(p) for p in name.split(".")):
            raise invalid(f"invalid name {name!r}: must be a DNS-1123 subdomain")
        if name != name.lower():
            raise invalid(f"invalid name {name!r}: must be lower case")
        return name

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, ns: str | None) -> str | None:
        if ns is not None and (not is_dns_label(ns) or ns != ns.lower()):
            raise invalid(f"invalid namespace {ns!r}: must be a DNS-1123 label")
        return ns


class Resource(Model):
    """One Istio object. Subclasses fix `kind` and the type of `spec`."""

    KIND: ClassVar[str] = ""
    GROUP: ClassVar[str] = NETWORKING_GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = NETWORKING_VERSIONS

    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: Any
    # Written by the API server/analyzers; never an input to routing, so it is read and dropped.
    status: Any = Field(default=None, exclude=True)

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        group, _, version = value.partition("/")
        if group != cls.GROUP or version not in cls.VERSIONS:
            allowed = ", ".join(f"{cls.GROUP}/{v}" for v in cls.VERSIONS)
            raise invalid(f"unsupported apiVersion {value!r} for {cls.KIND}: expected one of {allowed}")
        return value

    @model_validator(mode="after")
    def _dry_run_only_on_authz(self) -> Resource:
        # Istio's validateMetadata: only AuthorizationPolicy understands this annotation (checked there).
        if DRY_RUN_ANNOTATION in self.metadata.annotations and self.KIND != "AuthorizationPolicy":
            raise invalid(
                f"unsupported annotation {DRY_RUN_ANNOTATION} on {self.KIND}, please remove the annotation",
                at=f"metadata.annotations.{DRY_RUN_ANNOTATION}",
            )
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or DEFAULT_NAMESPACE

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.metadata.name}"
