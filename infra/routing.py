"""`Routing`: the stack's routing release (`weir:routing`, a file under stacks/routing/) as custom resources.

The objects are `mesh.manifests.routing.custom_resources` of that file (parsed and validated by `mesh.api`);
each depends on its CRD (created by `MeshPlatform`) and on the workloads it routes to.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra import objects

Obj = dict[str, Any]


class Routing(pulumi.ComponentResource):
    """Gateway, VirtualServices, DestinationRules (and any security resources) of one routing release."""

    def __init__(self, name: str, release: str, routing: list[Obj], object_set: objects.ObjectSet,
                 after: list[pulumi.Resource], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("weir:infra:Routing", name, None, opts)
        self.release = release
        self.resources = object_set.add(routing, parent=self, after=after)
        self.register_outputs({"release": release, "resources": [objects.object_id(o) for o in routing]})
