"""The Pulumi program under mocks (tests/infra/driver.py), per stack: the resource graph, the key properties
of the GKE resources, the Kubernetes objects (exactly `mesh.manifests.stack.render` of the stack's settings),
their ordering, the outputs, and that stacks differ only where their config does. Messages name the URN."""

from __future__ import annotations

import base64

import pytest
import yaml

import mesh.manifests.stack as manifests
from infra import cluster, objects, settings
from tests.infra import conftest, driver

STACKS = ("dev", "staging", "prod")
COMPONENTS = ("GkeCluster", "ImageRegistry", "MeshPlatform", "Bookinfo", "Routing")
CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
STACK_TYPE = "pulumi:pulumi:Stack"


def stack_settings(stack: str) -> settings.StackSettings:
    config = yaml.safe_load((settings.ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    return settings.from_mapping(config, stack)


@pytest.mark.parametrize("stack", STACKS)
def test_components_and_parents(programs, stack):
    program = programs[stack]
    assert program.error is None, program.error
    root = program.one(STACK_TYPE)["urn"]
    for name in COMPONENTS:
        component = program.one(f"weir:infra:{name}")
        assert component["parent"] == root, f"{component['urn']}: expected the stack as parent"
    for r in program.resources:
        if r["type"] != STACK_TYPE and not r["type"].startswith("weir:infra:"):
            parent = program.by_urn.get(r["parent"], {}).get("type", "")
            assert parent.startswith("weir:infra:"), f"{r['urn']}: parent {r['parent']} is not a component"


@pytest.mark.parametrize("stack", STACKS)
def test_cluster(programs, stack):
    s, program = stack_settings(stack), programs[stack]
    c = program.one(CLUSTER, s.cluster_name)
    props, urn = c["inputs"], c["urn"]
    expected = {
        "removeDefaultNodePool": True,
        "networkingMode": "VPC_NATIVE",
        "datapathProvider": "ADVANCED_DATAPATH",
        "enableShieldedNodes": True,
        "deletionProtection": s.deletion_protection,
        "releaseChannel": {"channel": s.release_channel},
        "workloadIdentityConfig": {"workloadPool": f"{s.project}.svc.id.goog"},
        "privateClusterConfig": {"enablePrivateNodes": True, "enablePrivateEndpoint": False,
                                 "masterIpv4CidrBlock": s.network.master_cidr},
        "masterAuthorizedNetworksConfig": {"cidrBlocks": [
            {"cidrBlock": n.cidr, "displayName": n.name} for n in s.authorized_networks]},
        "ipAllocationPolicy": {"clusterSecondaryRangeName": "pods", "servicesSecondaryRangeName": "services"},
        "location": s.region,
    }
    for key, value in expected.items():
        assert props.get(key) == value, f"{urn}: {key} is {props.get(key)!r}, expected {value!r}"
    assert "minMasterVersion" not in props and "enableAutopilot" not in props, urn
    subnet = program.one("gcp:compute/subnetwork:Subnetwork")
    assert props["subnetwork"] == f"{subnet['name']}-id", urn
    assert subnet["inputs"]["privateIpGoogleAccess"] is True, subnet["urn"]
    assert subnet["inputs"]["secondaryIpRanges"] == [
        {"rangeName": "pods", "ipCidrRange": s.network.pods_cidr},
        {"rangeName": "services", "ipCidrRange": s.network.services_cidr},
    ], subnet["urn"]
    program.one("gcp:compute/routerNat:RouterNat")


@pytest.mark.parametrize("stack", STACKS)
def test_node_pool_and_its_least_privilege_account(programs, stack):
    s, program = stack_settings(stack), programs[stack]
    pool = program.one(NODE_POOL)
    props, urn = pool["inputs"], pool["urn"]
    account = program.one("gcp:serviceaccount/account:Account")["inputs"]["email"]
    assert props["cluster"] == s.cluster_name, urn
    assert props["autoscaling"] == {"totalMinNodeCount": s.node_pool.min_nodes,
                                    "totalMaxNodeCount": s.node_pool.max_nodes,
                                    "locationPolicy": "BALANCED"}, urn
    assert props["management"] == {"autoRepair": True, "autoUpgrade": True}, urn
    node = props["nodeConfig"]
    assert node["machineType"] == s.node_pool.machine_type and node["diskSizeGb"] == s.node_pool.disk_size_gb, urn
    assert node["serviceAccount"] == account, f"{urn}: nodes must run as the dedicated service account"
    assert node["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableIntegrityMonitoring": True}, urn
    assert node["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}, urn
    roles = {r["inputs"]["role"]: r["inputs"]["member"]
             for r in program.of_type("gcp:projects/iAMMember:IAMMember")}
    assert roles == dict.fromkeys(cluster.NODE_ROLES, f"serviceAccount:{account}"), "project roles of the nodes"
    reader = program.one("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
    assert reader["inputs"]["role"] == "roles/artifactregistry.reader", reader["urn"]
    assert reader["inputs"]["member"] == f"serviceAccount:{account}", reader["urn"]
    repo = program.one("gcp:artifactregistry/repository:Repository")
    assert repo["inputs"]["format"] == "DOCKER" and repo["inputs"]["repositoryId"] == s.registry, repo["urn"]


@pytest.mark.parametrize("stack", STACKS)
def test_explicit_provider_from_the_gke_kubeconfig(programs, stack):
    program = programs[stack]
    provider = program.one("pulumi:providers:kubernetes")
    kubeconfig_value = provider["inputs"]["kubeconfig"]
    if isinstance(kubeconfig_value, dict):  # a secret, as the engine sees it
        kubeconfig_value = kubeconfig_value["value"]
    config = yaml.safe_load(kubeconfig_value)
    assert config["clusters"][0]["cluster"] == {"server": f"https://{driver.ENDPOINT}",
                                                "certificate-authority-data": driver.CA_CERT}, provider["urn"]
    assert config["users"][0]["user"]["exec"]["command"] == "gke-gcloud-auth-plugin", provider["urn"]
    assert any(dep.endswith(f"{NODE_POOL}::gke-pool") for dep in provider["dependencies"]), provider["urn"]
    for r in program.kubernetes():
        assert r["provider"] == provider["urn"], f"{r['urn']}: not on the explicit GKE provider"
    assert "kubeconfig" in program.secret_outputs
    assert yaml.safe_load(program.outputs["kubeconfig"]) == config


def test_kubeconfig_is_exec_based():
    text = cluster.kubeconfig("ctx", "10.0.0.1", base64.b64encode(b"ca").decode())
    config = yaml.safe_load(text)
    assert config["current-context"] == "ctx"
    assert "token" not in text and "password" not in text
    assert config["users"][0]["user"]["exec"]["apiVersion"] == "client.authentication.k8s.io/v1beta1"


@pytest.mark.parametrize("stack", STACKS)
def test_kubernetes_objects_are_the_rendered_manifests(programs, stack):
    """The program creates exactly `mesh.manifests.stack.render` (what `meshctl render` writes), unchanged."""
    program = programs[stack]
    rendered = manifests.render(stack_settings(stack).manifests)
    by_component = {"platform": "MeshPlatform", "bookinfo": "Bookinfo", "routing": "Routing"}
    created = {}
    for r in program.kubernetes():
        if r["type"] == "pulumi:providers:kubernetes":
            continue
        obj = {k: v for k, v in r["inputs"].items() if k != "status"}  # status: the mock's fabrication
        created[objects.object_id(obj)] = (obj, program.by_urn[r["parent"]]["type"], r["urn"])
    expected_ids = [objects.object_id(o) for group in rendered.values() for o in group]
    assert sorted(created) == sorted(expected_ids)
    for group, objs in rendered.items():
        for obj in objs:
            got, parent, urn = created[objects.object_id(obj)]
            assert parent == f"weir:infra:{by_component[group]}", f"{urn}: created by {parent}"
            assert got == obj, f"{urn}: differs from the rendered object"


@pytest.mark.parametrize("stack", STACKS)
def test_meshctl_render_writes_the_same_objects(programs, stack, tmp_path):
    """A user without Pulumi can `kubectl apply -f` what `meshctl render` writes: the program's objects."""
    click_testing = pytest.importorskip("click.testing")
    import mesh.cli as cli

    result = click_testing.CliRunner().invoke(cli.main, ["render", "--stack", stack, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rendered = {objects.object_id(o): o for group in ("platform", "bookinfo", "routing")
                for o in yaml.safe_load_all((tmp_path / f"{group}.yaml").read_text()) if o}
    created = {objects.object_id(r["inputs"]): r for r in programs[stack].kubernetes()
               if r["type"] != "pulumi:providers:kubernetes"}
    assert sorted(created) == sorted(rendered)
    for oid, r in created.items():
        got = {k: v for k, v in r["inputs"].items() if k != "status"}
        assert got == rendered[oid], f"{r['urn']}: differs from meshctl render's {oid}"


@pytest.mark.parametrize("stack", STACKS)
def test_apply_order(programs, stack):
    """Namespaced objects wait for their Namespace, custom resources for their CRD."""
    program = programs[stack]
    urns = {}
    for r in program.kubernetes():
        if r["type"] != "pulumi:providers:kubernetes":
            urns[objects.object_id(r["inputs"])] = r
    crds = {objects.crd_key(r["inputs"]): r["urn"] for r in urns.values()
            if r["inputs"]["kind"] == "CustomResourceDefinition"}
    assert len(crds) == 7
    custom = 0
    for r in urns.values():
        obj, deps = r["inputs"], set(r["dependencies"])
        namespace = obj["metadata"].get("namespace")
        if namespace:
            assert urns[f"Namespace/{namespace}"]["urn"] in deps, f"{r['urn']}: does not wait for its Namespace"
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else "core"
        if group not in conftest.K8S_BUILTIN_GROUPS:
            custom += 1
            assert crds[objects.custom_key(obj)] in deps, f"{r['urn']}: does not depend on its CRD"
    assert custom >= 11  # the routing release (10) and the mesh-wide PeerAuthentication


@pytest.mark.parametrize("stack", STACKS)
def test_outputs(programs, stack):
    s, program = stack_settings(stack), programs[stack]
    assert program.outputs["ingressAddress"] == driver.INGRESS_IP
    assert program.outputs["clusterName"] == s.cluster_name
    assert program.outputs["routing"] == s.routing
    assert program.outputs["imageRepository"] == f"{s.region}-docker.pkg.dev/{s.project}/{s.registry}"


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, str(i)))
    else:
        yield ".".join(path), value


# Every GCP property where dev and prod differ, with the stack config key it comes from.
DEV_PROD_GCP_DIFFERENCES = {
    ("Account", "accountId"): "weir:clusterName", ("Account", "displayName"): "weir:clusterName",
    ("Account", "email"): "weir:clusterName",
    ("Cluster", "name"): "weir:clusterName", ("Cluster", "deletionProtection"): "weir:deletionProtection",
    ("Cluster", "privateClusterConfig.masterIpv4CidrBlock"): "weir:network.masterCidr",
    ("Cluster", "releaseChannel.channel"): "weir:releaseChannel",
    ("Cluster", "resourceLabels.weir-stack"): "the stack name",
    ("Cluster", "workloadIdentityConfig.workloadPool"): "gcp:project",
    ("IAMMember", "member"): "weir:clusterName", ("IAMMember", "project"): "gcp:project",
    ("NodePool", "autoscaling.totalMaxNodeCount"): "weir:nodePool.maxNodes",
    ("NodePool", "autoscaling.totalMinNodeCount"): "weir:nodePool.minNodes",
    ("NodePool", "cluster"): "weir:clusterName", ("NodePool", "nodeConfig.diskSizeGb"): "weir:nodePool.diskSizeGb",
    ("NodePool", "nodeConfig.labels.weir-stack"): "the stack name",
    ("NodePool", "nodeConfig.machineType"): "weir:nodePool.machineType",
    ("NodePool", "nodeConfig.serviceAccount"): "weir:clusterName",
    ("RepositoryIamMember", "member"): "weir:clusterName", ("RepositoryIamMember", "project"): "gcp:project",
    ("Subnetwork", "ipCidrRange"): "weir:network.nodesCidr",
    ("Subnetwork", "secondaryIpRanges.#.ipCidrRange"): "weir:network.podsCidr/servicesCidr",
    ("kubernetes", "kubeconfig.value"): "gcp:project, weir:clusterName",
}



def test_dev_and_prod_graphs_differ_only_in_config(programs):
    dev, prod = programs["dev"], programs["prod"]

    def key(r, stack):
        return r["type"], r["name"].replace(f"weir-{stack}", "weir-STACK")

    dev_by = {key(r, "dev"): r for r in dev.resources}
    prod_by = {key(r, "prod"): r for r in prod.resources}
    assert set(dev_by) == set(prod_by), "dev and prod create different resources"
    differences = set()
    for k, d in dev_by.items():
        if k[0].startswith("kubernetes:") and k[0] != "pulumi:providers:kubernetes":
            continue  # Kubernetes objects: rendered from each stack's settings (test above)
        a, b = dict(_leaves(d["inputs"])), dict(_leaves(prod_by[k]["inputs"]))
        for path in set(a) | set(b):
            if a.get(path) != b.get(path):
                generic = ".".join("#" if p.isdigit() else p for p in path.split("."))
                differences.add((k[0].rsplit(":", 1)[-1], generic, d["urn"]))
    unexplained = sorted((t, p, urn) for t, p, urn in differences if (t, p) not in DEV_PROD_GCP_DIFFERENCES)
    assert unexplained == [], "dev and prod differ where no config key says so"


def test_autopilot(programs):
    program = programs["dev-autopilot"]
    assert program.error is None, program.error
    c = program.one(CLUSTER, "weir-dev")
    assert c["inputs"]["enableAutopilot"] is True, c["urn"]
    assert "removeDefaultNodePool" not in c["inputs"], c["urn"]
    assert c["inputs"]["privateClusterConfig"]["enablePrivateNodes"] is True, c["urn"]
    assert program.of_type(NODE_POOL) == [], "Autopilot clusters have no managed node pool"
    defaults = c["inputs"]["clusterAutoscaling"]["autoProvisioningDefaults"]
    assert defaults["serviceAccount"] == program.one("gcp:serviceaccount/account:Account")["inputs"]["email"]
    assert program.outputs["ingressAddress"] == driver.INGRESS_IP


def test_bad_config_fails_naming_the_key(programs):
    program = programs["dev-bad-mtls"]
    assert program.error and "weir:mtlsMode" in program.error and "LOOSE" in program.error
    assert [r["type"] for r in program.resources] == [STACK_TYPE], "nothing is created from bad config"
