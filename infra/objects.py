"""Kubernetes objects (the plain dicts of `mesh.manifests`) as Pulumi resources, in a safe apply order.

`ObjectSet.add(objs, parent)` creates one typed `pulumi_kubernetes` resource per built-in object and an
`apiextensions.CustomResource` per custom one, all on the explicit provider. Ordering is explicit, since
Kubernetes itself does none: a namespaced object depends on its Namespace, a custom resource on its
CustomResourceDefinition, and everything on the resources the set was told to wait for. The set remembers
Namespaces and CRDs across components, so `Routing` depends on the CRDs `MeshPlatform` created.
Logical names are `<namespace>/<name>` (or `<name>`), unique per type like the objects themselves.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

Obj = dict[str, Any]

# apiVersion/kind -> typed class; anything else must be a custom resource of a CRD known to the set.
BUILTIN = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.rbac.v1.ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.rbac.v1.ClusterRoleBinding,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): k8s.apiextensions.v1.CustomResourceDefinition,
}
# Top-level object fields -> the typed resources' argument names (nested fields stay camelCase).
FIELDS = {
    "metadata": "metadata", "spec": "spec", "data": "data", "stringData": "string_data",
    "binaryData": "binary_data", "type": "type", "immutable": "immutable", "rules": "rules",
    "subjects": "subjects", "roleRef": "role_ref", "aggregationRule": "aggregation_rule",
    "automountServiceAccountToken": "automount_service_account_token", "secrets": "secrets",
    "imagePullSecrets": "image_pull_secrets",
}


def object_id(obj: Obj) -> str:
    """`kind/namespace/name` (or `kind/name`), the form errors and tests name objects by."""
    meta = obj["metadata"]
    return "/".join(p for p in (obj["kind"], meta.get("namespace"), meta["name"]) if p)


def crd_key(obj: Obj) -> tuple[str, str]:
    """(group, kind) served by a CRD object."""
    return obj["spec"]["group"], obj["spec"]["names"]["kind"]


def custom_key(obj: Obj) -> tuple[str, str]:
    """(group, kind) of a custom resource."""
    return obj["apiVersion"].split("/")[0], obj["kind"]


class ObjectSet:
    """The Kubernetes resources of one stack, created on one provider; see the module docstring."""

    def __init__(self, provider: k8s.Provider) -> None:
        self.provider = provider
        self.namespaces: dict[str, pulumi.Resource] = {}
        self.crds: dict[tuple[str, str], pulumi.Resource] = {}
        self.resources: dict[str, pulumi.CustomResource] = {}  # by object_id

    def add(self, objs: list[Obj], parent: pulumi.Resource,
            after: list[pulumi.Resource] | None = None) -> list[pulumi.CustomResource]:
        return [self._add(obj, parent, after or []) for obj in objs]

    def _add(self, obj: Obj, parent: pulumi.Resource, after: list[pulumi.Resource]) -> pulumi.CustomResource:
        meta = obj["metadata"]
        namespace = meta.get("namespace")
        depends = list(after)
        if namespace in self.namespaces:
            depends.append(self.namespaces[namespace])
        key = (obj["apiVersion"], obj["kind"])
        cls = BUILTIN.get(key)
        if cls is None and custom_key(obj) not in self.crds:
            raise ValueError(f"{object_id(obj)}: {key[0]} {key[1]} is neither a known built-in kind "
                             "nor served by a CRD created earlier")
        if cls is None:
            depends.append(self.crds[custom_key(obj)])
        opts = pulumi.ResourceOptions(parent=parent, provider=self.provider, depends_on=depends)
        name = f"{namespace}/{meta['name']}" if namespace else meta["name"]
        if cls is None:
            unknown = sorted(set(obj) - {"apiVersion", "kind", "metadata", "spec"})
            if unknown:
                raise ValueError(f"{object_id(obj)}: unsupported top-level field {unknown[0]}")
            resource = k8s.apiextensions.CustomResource(
                name, api_version=obj["apiVersion"], kind=obj["kind"], metadata=meta, spec=obj.get("spec"),
                opts=opts)
        else:
            unknown = sorted(set(obj) - {"apiVersion", "kind"} - set(FIELDS))
            if unknown:
                raise ValueError(f"{object_id(obj)}: unsupported top-level field {unknown[0]}")
            args = {FIELDS[k]: v for k, v in obj.items() if k in FIELDS}
            resource = cls(name, opts=opts, **args)
        if key == ("v1", "Namespace"):
            self.namespaces[meta["name"]] = resource
        elif key[1] == "CustomResourceDefinition":
            self.crds[crd_key(obj)] = resource
        self.resources[object_id(obj)] = resource
        return resource


def ingress_address(service: k8s.core.v1.Service) -> pulumi.Output[str]:
    """The LoadBalancer's IP (or hostname) from the Service status, once the cloud has assigned it."""

    def pick(status: Any) -> str:
        lb = getattr(status, "load_balancer", None) or (status or {}).get("loadBalancer") or {}
        ingress = getattr(lb, "ingress", None) or (lb.get("ingress") if isinstance(lb, dict) else None) or []
        for entry in ingress:
            get = entry.get if isinstance(entry, dict) else lambda k, e=entry: getattr(e, k, None)
            if get("ip") or get("hostname"):
                return get("ip") or get("hostname")
        return ""

    return service.status.apply(pick)
