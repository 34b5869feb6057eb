"""`GkeCluster`: the network, the GKE cluster, its node pool and the explicit Kubernetes provider.

What only the cloud has (DESIGN.md principle 5): a VPC-native network with secondary ranges for pods and
services, Cloud NAT for the private nodes' egress, a private cluster (Workload Identity, Dataplane V2,
shielded nodes, a release channel, API access only from the authorized networks) with its default node pool
removed and one managed, autoscaled pool run by a least-privilege service account; or, with
`weir:autopilot`, an Autopilot cluster and no pool. `kubeconfig()` is the `gke-gcloud-auth-plugin`
kubeconfig the `pulumi_kubernetes.Provider` is built from.
Next: `infra.platform.MeshPlatform` uses `provider`.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
import yaml

from infra import settings as stack_settings

# Project-level roles of the node service account: logs and metrics only (GKE's least-privilege list).
NODE_ROLES = (
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
)
PODS_RANGE = "pods"
SERVICES_RANGE = "services"
STACK_LABEL = "weir-stack"  # on the cluster; infra.policy reads it (deletion protection in prod)


def kubeconfig(context: str, endpoint: str, ca_certificate: str) -> str:
    """A kubeconfig that authenticates through `gke-gcloud-auth-plugin` (no static credentials)."""
    return yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": f"https://{endpoint}",
                                                   "certificate-authority-data": ca_certificate}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
        "users": [{"name": context, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "gke-gcloud-auth-plugin",
            "installHint": "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin",
            "provideClusterInfo": True,
        }}}],
    }, sort_keys=False)


class GkeCluster(pulumi.ComponentResource):
    """Network, cluster, node pool (unless Autopilot), kubeconfig (secret) and a Kubernetes provider."""

    def __init__(self, name: str, settings: stack_settings.StackSettings,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("weir:infra:GkeCluster", name, None, opts)
        self._settings = settings
        child = pulumi.ResourceOptions(parent=self)
        self.network = gcp.compute.Network(
            f"{name}-network", auto_create_subnetworks=False, routing_mode="REGIONAL", opts=child)
        self.subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            region=settings.region,
            network=self.network.id,
            ip_cidr_range=settings.network.nodes_cidr,
            private_ip_google_access=True,  # private nodes reach Artifact Registry and Google APIs
            secondary_ip_ranges=[
                {"range_name": PODS_RANGE, "ip_cidr_range": settings.network.pods_cidr},
                {"range_name": SERVICES_RANGE, "ip_cidr_range": settings.network.services_cidr},
            ],
            opts=child,
        )
        router = gcp.compute.Router(f"{name}-router", region=settings.region, network=self.network.id,
                                    opts=child)
        gcp.compute.RouterNat(  # egress for nodes without public IPs (images outside Google, updates)
            f"{name}-nat", router=router.name, region=settings.region,
            nat_ip_allocate_option="AUTO_ONLY", source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
            opts=child)
        self.node_service_account = gcp.serviceaccount.Account(
            f"{name}-nodes", account_id=f"{settings.cluster_name}-nodes"[:30],
            display_name=f"GKE nodes of {settings.cluster_name}", opts=child)
        for role in NODE_ROLES:
            gcp.projects.IAMMember(
                f"{name}-nodes-{role.split('/')[1]}", project=settings.project, role=role,
                member=self.node_service_account.email.apply(lambda e: f"serviceAccount:{e}"), opts=child)
        self.cluster = gcp.container.Cluster(settings.cluster_name, opts=child, **self._cluster_args())
        self.node_pool = None if settings.autopilot else self._node_pool(name)
        self.cluster_name = self.cluster.name
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            self.cluster.name, self.cluster.endpoint, self.cluster.master_auth.cluster_ca_certificate,
        ).apply(lambda a: kubeconfig(f"gke_{settings.project}_{settings.region}_{a[0]}", a[1], a[2])))
        # Children wait for the pool, so no workload is scheduled before there are nodes to run it.
        after = [self.node_pool] if self.node_pool else [self.cluster]
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.kubeconfig, enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=after))
        self.register_outputs({"name": self.cluster_name, "endpoint": self.cluster.endpoint,
                               "kubeconfig": self.kubeconfig})

    def _cluster_args(self) -> dict:
        s = self._settings
        args: dict = {
            "location": s.region,
            "network": self.network.id,
            "subnetwork": self.subnet.id,
            "networking_mode": "VPC_NATIVE",
            "ip_allocation_policy": {"cluster_secondary_range_name": PODS_RANGE,
                                     "services_secondary_range_name": SERVICES_RANGE},
            "release_channel": {"channel": s.release_channel},
            "private_cluster_config": {"enable_private_nodes": True, "enable_private_endpoint": False,
                                       "master_ipv4_cidr_block": s.network.master_cidr},
            "master_authorized_networks_config": {"cidr_blocks": [
                {"display_name": n.name, "cidr_block": n.cidr} for n in s.authorized_networks]},
            "deletion_protection": s.deletion_protection,
            "resource_labels": {STACK_LABEL: s.stack},
        }
        if s.autopilot:  # Workload Identity, Dataplane V2 and shielded nodes are Autopilot's defaults
            return {**args, "enable_autopilot": True, "cluster_autoscaling": {"auto_provisioning_defaults": {
                "service_account": self.node_service_account.email,
                "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"]}}}
        return {
            **args,
            "remove_default_node_pool": True,
            "initial_node_count": 1,
            "workload_identity_config": {"workload_pool": s.workload_pool},
            "datapath_provider": "ADVANCED_DATAPATH",
            "enable_shielded_nodes": True,
        }

    def _node_pool(self, name: str) -> gcp.container.NodePool:
        s, pool = self._settings, self._settings.node_pool
        return gcp.container.NodePool(
            f"{name}-pool",
            cluster=self.cluster.name,
            location=s.region,
            autoscaling={"total_min_node_count": pool.min_nodes, "total_max_node_count": pool.max_nodes,
                         "location_policy": "BALANCED"},
            management={"auto_repair": True, "auto_upgrade": True},
            node_config={
                "machine_type": pool.machine_type,
                "disk_size_gb": pool.disk_size_gb,
                "disk_type": pool.disk_type,
                "service_account": self.node_service_account.email,
                "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],  # IAM decides, not scopes
                "shielded_instance_config": {"enable_secure_boot": True, "enable_integrity_monitoring": True},
                "workload_metadata_config": {"mode": "GKE_METADATA"},
                "metadata": {"disable-legacy-endpoints": "true"},
                "labels": {STACK_LABEL: s.stack},
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
