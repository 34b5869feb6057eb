"""`Bookinfo`: the "bookinfo" group of `mesh.manifests.stack.render` on the cluster.

The bookinfo-lite Namespace, ServiceAccounts, Services (`ui`, `gw`, `books`, `ratings`) and one Deployment
per app version, each already carrying the one `weir-proxy` sidecar (`mesh.manifests.injection`). It waits
for the platform, so sidecars find the control plane and the mesh root certificate when pods start.
Next: `infra.routing.Routing`.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra import objects

Obj = dict[str, Any]


class Bookinfo(pulumi.ComponentResource):
    """bookinfo-lite workloads with sidecars and their Services."""

    def __init__(self, name: str, bookinfo: list[Obj], object_set: objects.ObjectSet,
                 after: list[pulumi.Resource], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("weir:infra:Bookinfo", name, None, opts)
        self.resources = object_set.add(bookinfo, parent=self, after=after)
        self.workloads = [objects.object_id(o) for o in bookinfo if o["kind"] == "Deployment"]
        self.register_outputs({"workloads": self.workloads})
