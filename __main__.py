"""Pulumi program entry point: reads the stack settings once and wires the infra components.

cluster (+ Kubernetes provider) → image registry → platform (CRDs, RBAC, control plane, ingress) →
bookinfo-lite with sidecars → the stack's routing release. All Kubernetes objects come from
`mesh.manifests.stack.render`, the same function `meshctl render` uses.
"""

import pulumi

import mesh.manifests.stack as manifests
from infra import bookinfo, cluster, objects, platform, registry, routing, settings

stack = settings.load()
rendered = manifests.render(stack.manifests)

gke = cluster.GkeCluster("gke", stack)
images = registry.ImageRegistry("images", stack, reader=gke.node_service_account.email)
object_set = objects.ObjectSet(gke.provider)
mesh_platform = platform.MeshPlatform("platform", rendered["platform"], object_set)
app = bookinfo.Bookinfo("bookinfo", rendered["bookinfo"], object_set, after=[mesh_platform])
release = routing.Routing("routing", stack.routing, rendered["routing"], object_set, after=[app])

pulumi.export("ingressAddress", mesh_platform.ingress_address)
pulumi.export("clusterName", gke.cluster_name)
pulumi.export("kubeconfig", gke.kubeconfig)
pulumi.export("routing", release.release)
pulumi.export("imageRepository", images.url)
