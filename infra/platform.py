"""`MeshPlatform`: the "platform" group of `mesh.manifests.stack.render` on the cluster.

Namespaces first, then the CRDs of every kind Weir serves, RBAC (the admin binding for `weir:adminUsers`,
the control plane's least-privilege roles), the control plane Deployment + Service, the ingress gateway
(Deployment + the one LoadBalancer Service) and last the mesh-wide PeerAuthentication, which depends on its
CRD. The objects come from `mesh.manifests` unchanged; this component only orders and owns them.
Next: `infra.bookinfo.Bookinfo` and `infra.routing.Routing`, on the same `ObjectSet`.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra import objects

Obj = dict[str, Any]


class MeshPlatform(pulumi.ComponentResource):
    """Namespaces, CRDs, RBAC, control plane, ingress gateway, mesh-wide PeerAuthentication."""

    def __init__(self, name: str, platform: list[Obj], object_set: objects.ObjectSet,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("weir:infra:MeshPlatform", name, None, opts)
        self.resources = object_set.add(platform, parent=self)
        balancers = [
            (obj, res) for obj, res in zip(platform, self.resources)
            if obj["kind"] == "Service" and obj.get("spec", {}).get("type") == "LoadBalancer"
        ]
        if len(balancers) != 1:
            raise ValueError(f"platform objects: expected one LoadBalancer Service (the ingress gateway), "
                             f"found {[objects.object_id(o) for o, _ in balancers]}")
        self.ingress_service = objects.object_id(balancers[0][0])
        self.ingress_address = objects.ingress_address(balancers[0][1])
        self.register_outputs({"ingress_address": self.ingress_address,
                               "crds": sorted(f"{g}/{k}" for g, k in object_set.crds)})
