"""One stack's Kubernetes objects, grouped and ordered for applying: `render(settings)`.

The one entry point of `infra/` (Pulumi wraps each object) and of `meshctl render` (writes each group as a
multi-document YAML file). Groups, in apply order:

- `platform`: Namespace `weir-system`, the seven Istio CRDs, RBAC (admin binding, the control plane's
  least-privilege ClusterRole/Role), the control plane Deployment + Service `weir-control`, the ingress
  gateway (ServiceAccount, Deployment, LoadBalancer Service `istio-ingressgateway`) and, last, the
  mesh-wide PeerAuthentication `weir-system/default` (a custom resource: apply it once its CRD is
  established).
- `bookinfo`: Namespace `bookinfo`, ServiceAccounts, Services, Deployments with the sidecar injected, and
  the NetworkPolicy that lets only the sidecars' inbound and health ports in.
- `routing`: the stack's pinned routing release as custom resources (each depends on its CRD).

Pure: every call returns fresh dicts.
"""

from __future__ import annotations

import copy
from typing import Any

from mesh.manifests import bookinfo, crds, gateway, injection, platform
from mesh.manifests.settings import ManifestSettings

GROUPS = ("platform", "bookinfo", "routing")

Obj = dict[str, Any]


def meshed_bookinfo(settings: ManifestSettings) -> list[Obj]:
    """bookinfo-lite's objects, each Deployment with the one sidecar injected."""
    return [
        injection.inject_sidecar(obj, proxy_image=settings.image, otlp_endpoint=settings.otlp_endpoint)
        if obj["kind"] == "Deployment" else obj
        for obj in bookinfo.all_objects(settings.image)
    ]


def render(settings: ManifestSettings) -> dict[str, list[Obj]]:
    """`{"platform": [...], "bookinfo": [...], "routing": [...]}`, keys and lists in apply order."""
    return {
        "platform": [
            *platform.namespaces(),
            *crds.all_crds(),
            *platform.rbac(settings),
            *platform.control_plane(settings),
            *gateway.all_objects(settings),
            platform.mesh_peer_authentication(settings),
        ],
        "bookinfo": [*meshed_bookinfo(settings), injection.sidecar_only_ingress(bookinfo.NAMESPACE)],
        "routing": copy.deepcopy(list(settings.routing)),
    }
