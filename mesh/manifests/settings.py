"""What the Kubernetes manifests of one stack depend on: the part of a stack's settings that is not cloud.

One frozen object, built by the Pulumi program (`infra.settings`, from Pulumi config) and by `meshctl render`
(from the same `stacks/Pulumi.<env>.yaml`), so both produce the same objects (`mesh.manifests.stack.render`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MTLS_MODES = ("STRICT", "PERMISSIVE", "DISABLE")
OUTBOUND_POLICIES = ("ALLOW_ANY", "REGISTRY_ONLY")  # meshConfig.outboundTrafficPolicy.mode
DEFAULT_IMAGE = "ghcr.io/weir-mesh/weir:0.1.0"  # when the stack sets no `weir:image`


@dataclass(frozen=True, slots=True)
class ManifestSettings:
    stack: str
    image: str  # the one image holding the mesh and bookinfo-lite (control plane, proxy, apps)
    routing: tuple[dict[str, Any], ...]  # the pinned release's resources (mesh.manifests.releases), as dumped
    admin_users: tuple[str, ...] = ()  # cluster-admin ClusterRoleBinding subjects (the article's step 1)
    mtls_mode: str = "PERMISSIVE"  # the mesh-wide PeerAuthentication in the root namespace
    outbound_policy: str = "ALLOW_ANY"  # meshConfig.outboundTrafficPolicy.mode
    workload_cert_ttl: str = "24h"
    control_plane_replicas: int = 1
    ingress_replicas: int = 1
