"""Weir's infrastructure policies as plain functions over one resource's properties (engine-shaped,
camelCase, as CrossGuard and the mock monitor see them): `check(type, props)` → violation messages.

- `no-public-nodes`: GKE clusters have private nodes; no node pool turns them public again.
- `workload-identity`: clusters use Workload Identity (Autopilot has it always); node pools expose the
  GKE metadata server, not the node's credentials.
- `deletion-protection-in-prod`: a cluster labelled `weir-stack: prod` has deletion protection on.
- `one-sidecar`: a Deployment in a meshed namespace (or marked injected) has exactly one `weir-proxy`.
- `only-ingress-load-balancer`: the ingress gateway Service is the only LoadBalancer.

Pure Python with no Pulumi import, so the CrossGuard pack (infra/policypack) and the tests share it.
The names below mirror `mesh.manifests` (tests/infra/test_policy.py checks they agree).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.manifests import bookinfo, gateway, injection, platform

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
SIDECAR_CONTAINER = injection.SIDECAR_CONTAINER
STATUS_ANNOTATION = injection.STATUS_ANNOTATION
MESHED_NAMESPACES = (bookinfo.NAMESPACE,)  # namespaces labelled for injection by mesh.manifests
INGRESS_SERVICES = (f"{platform.SYSTEM_NAMESPACE}/{gateway.NAME}",)
STACK_LABEL = "weir-stack"  # infra.cluster.STACK_LABEL
PROTECTED_STACKS = ("prod",)

Props = Mapping[str, Any]


def _get(props: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(props, Mapping):
            return None
        props = props.get(key)
    return props


def no_public_nodes(typ: str, props: Props) -> list[str]:
    if typ == CLUSTER and _get(props, "privateClusterConfig", "enablePrivateNodes") is not True:
        return ["cluster nodes must be private: set privateClusterConfig.enablePrivateNodes"]
    if typ == NODE_POOL and _get(props, "networkConfig", "enablePrivateNodes") is False:
        return ["node pool sets networkConfig.enablePrivateNodes=false: its nodes would get public IPs"]
    return []


def workload_identity(typ: str, props: Props) -> list[str]:
    if typ == CLUSTER and not _get(props, "enableAutopilot"):
        pool = _get(props, "workloadIdentityConfig", "workloadPool") or ""
        if not pool.endswith(".svc.id.goog"):
            return ["Workload Identity is off: set workloadIdentityConfig.workloadPool to <project>.svc.id.goog"]
    if typ == NODE_POOL and _get(props, "nodeConfig", "workloadMetadataConfig", "mode") != "GKE_METADATA":
        return ["node pool must use nodeConfig.workloadMetadataConfig.mode GKE_METADATA (Workload Identity)"]
    return []


def deletion_protection_in_prod(typ: str, props: Props) -> list[str]:
    stack = _get(props, "resourceLabels", STACK_LABEL)
    if typ == CLUSTER and stack in PROTECTED_STACKS and _get(props, "deletionProtection") is not True:
        return [f"cluster of stack {stack} must have deletionProtection on"]
    return []


def one_sidecar(typ: str, props: Props) -> list[str]:
    if typ != DEPLOYMENT:
        return []
    template = _get(props, "spec", "template") or {}
    meshed = (_get(props, "metadata", "namespace") in MESHED_NAMESPACES
              or STATUS_ANNOTATION in (_get(template, "metadata", "annotations") or {}))
    if not meshed:
        return []
    spec = _get(template, "spec") or {}
    # a native sidecar (initContainers, restartPolicy Always) or a classic one
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    count = sum(1 for c in containers if isinstance(c, Mapping) and c.get("name") == SIDECAR_CONTAINER)
    if count != 1:
        return [f"meshed Deployment {_get(props, 'metadata', 'name')} has {count} {SIDECAR_CONTAINER} "
                "containers, expected exactly one"]
    return []


def only_ingress_load_balancer(typ: str, props: Props) -> list[str]:
    if typ != SERVICE or _get(props, "spec", "type") != "LoadBalancer":
        return []
    name = f"{_get(props, 'metadata', 'namespace') or 'default'}/{_get(props, 'metadata', 'name')}"
    if name not in INGRESS_SERVICES:
        return [f"Service {name} is a LoadBalancer; only {', '.join(INGRESS_SERVICES)} may be"]
    return []


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    description: str
    check: Callable[[str, Props], list[str]]


POLICIES = (
    Policy("no-public-nodes", "GKE nodes have no public IPs.", no_public_nodes),
    Policy("workload-identity", "Workload Identity on clusters and node pools.", workload_identity),
    Policy("deletion-protection-in-prod", "Production clusters have deletion protection.",
           deletion_protection_in_prod),
    Policy("one-sidecar", "Every meshed Deployment has exactly one weir-proxy sidecar.", one_sidecar),
    Policy("only-ingress-load-balancer", "Only the ingress gateway Service is a LoadBalancer.",
           only_ingress_load_balancer),
)


def check(typ: str, props: Props) -> list[str]:
    """Every policy's violations for one resource, each prefixed with the policy's name."""
    return [f"{p.name}: {msg}" for p in POLICIES for msg in p.check(typ, props)]


def check_all(resources: Iterable[tuple[str, str, Props]]) -> list[str]:
    """Violations over (urn, type, props) triples, each naming the resource's URN."""
    return [f"{urn}: {msg}" for urn, typ, props in resources for msg in check(typ, props)]
