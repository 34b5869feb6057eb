"""infra.policy: each policy against good and bad resource properties, and the program's own resources
(every stack, under mocks) passing all of them."""

from __future__ import annotations

import copy

import pytest
import yaml

import mesh.manifests.injection as injection
import mesh.manifests.stack as manifests
from infra import cluster, policy, settings

GOOD_CLUSTER = {
    "privateClusterConfig": {"enablePrivateNodes": True},
    "workloadIdentityConfig": {"workloadPool": "p.svc.id.goog"},
    "deletionProtection": True,
    "resourceLabels": {"weir-stack": "prod"},
}
GOOD_POOL = {"nodeConfig": {"workloadMetadataConfig": {"mode": "GKE_METADATA"}}}
MESHED = {
    "metadata": {"name": "books-v1", "namespace": "bookinfo"},
    "spec": {"template": {"metadata": {}, "spec": {"containers": [{"name": "app"}, {"name": "weir-proxy"}]}}},
}
NATIVE = {
    "metadata": {"name": "books-v1", "namespace": "bookinfo"},
    "spec": {"template": {"metadata": {}, "spec": {"initContainers": [{"name": "weir-proxy", "restartPolicy": "Always"}],
                                                   "containers": [{"name": "app"}]}}},
}
INGRESS = {"metadata": {"name": "istio-ingressgateway", "namespace": "weir-system"}, "spec": {"type": "LoadBalancer"}}


def changed(props: dict, path: str, value) -> dict:
    out = copy.deepcopy(props)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return out


CASES = [  # (policy name, type, props, violated?)
    ("no-public-nodes", policy.CLUSTER, GOOD_CLUSTER, False),
    ("no-public-nodes", policy.CLUSTER, changed(GOOD_CLUSTER, "privateClusterConfig.enablePrivateNodes", False), True),
    ("no-public-nodes", policy.CLUSTER, changed(GOOD_CLUSTER, "privateClusterConfig", ...), True),
    ("no-public-nodes", policy.NODE_POOL, GOOD_POOL, False),
    ("no-public-nodes", policy.NODE_POOL, changed(GOOD_POOL, "networkConfig.enablePrivateNodes", False), True),
    ("workload-identity", policy.CLUSTER, GOOD_CLUSTER, False),
    ("workload-identity", policy.CLUSTER, changed(GOOD_CLUSTER, "workloadIdentityConfig", ...), True),
    ("workload-identity", policy.CLUSTER, {**changed(GOOD_CLUSTER, "workloadIdentityConfig", ...),
                                           "enableAutopilot": True}, False),
    ("workload-identity", policy.NODE_POOL, GOOD_POOL, False),
    ("workload-identity", policy.NODE_POOL, changed(GOOD_POOL, "nodeConfig.workloadMetadataConfig.mode",
                                                    "GCE_METADATA"), True),
    ("deletion-protection-in-prod", policy.CLUSTER, GOOD_CLUSTER, False),
    ("deletion-protection-in-prod", policy.CLUSTER, changed(GOOD_CLUSTER, "deletionProtection", False), True),
    ("deletion-protection-in-prod", policy.CLUSTER, changed(GOOD_CLUSTER, "deletionProtection", ...), True),
    ("deletion-protection-in-prod", policy.CLUSTER,
     changed(changed(GOOD_CLUSTER, "deletionProtection", False), "resourceLabels.weir-stack", "dev"), False),
    ("one-sidecar", policy.DEPLOYMENT, MESHED, False),
    ("one-sidecar", policy.DEPLOYMENT, changed(MESHED, "spec.template.spec.containers", [{"name": "app"}]), True),
    ("one-sidecar", policy.DEPLOYMENT, NATIVE, False),  # injection's native sidecar (initContainers)
    ("one-sidecar", policy.DEPLOYMENT, changed(NATIVE, "spec.template.spec.containers",
                                               [{"name": "app"}, {"name": "weir-proxy"}]), True),
    ("one-sidecar", policy.DEPLOYMENT, changed(MESHED, "spec.template.spec.containers",
                                               [{"name": "weir-proxy"}, {"name": "weir-proxy"}]), True),
    ("one-sidecar", policy.DEPLOYMENT, changed(changed(MESHED, "metadata.namespace", "weir-system"),
                                               "spec.template.spec.containers", [{"name": "app"}]), False),
    ("one-sidecar", policy.DEPLOYMENT, changed(changed(changed(MESHED, "metadata.namespace", "other"),
                                                       "spec.template.metadata.annotations",
                                                       {injection.STATUS_ANNOTATION: "{}"}),
                                               "spec.template.spec.containers", [{"name": "app"}]), True),
    ("only-ingress-load-balancer", policy.SERVICE, INGRESS, False),
    ("only-ingress-load-balancer", policy.SERVICE, changed(INGRESS, "metadata.name", "books"), True),
    ("only-ingress-load-balancer", policy.SERVICE, changed(changed(INGRESS, "metadata.name", "books"),
                                                           "spec.type", "ClusterIP"), False),
]


@pytest.mark.parametrize(("name", "typ", "props", "violated"), CASES,
                         ids=[f"{c[0]}-{i}-{'bad' if c[3] else 'good'}" for i, c in enumerate(CASES)])
def test_policy(name, typ, props, violated):
    found = [m for m in policy.check(typ, props) if m.startswith(f"{name}: ")]
    assert bool(found) == violated, found


def test_names_agree_with_the_manifests_and_the_cluster():
    assert policy.STACK_LABEL == cluster.STACK_LABEL
    raw = yaml.safe_load((settings.ROOT / "stacks" / "Pulumi.dev.yaml").read_text())["config"]
    rendered = manifests.render(settings.from_mapping(raw, "dev").manifests)
    objs = [o for group in rendered.values() for o in group]
    balancers = {f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in objs
                 if o["kind"] == "Service" and o["spec"].get("type") == "LoadBalancer"}
    assert balancers == set(policy.INGRESS_SERVICES)
    meshed = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"
              and o["metadata"].get("labels", {}).get("weir-injection") == "enabled"}
    assert meshed == set(policy.MESHED_NAMESPACES)


def test_check_all_names_the_urn():
    urn = "urn:pulumi:prod::weir::weir:infra:GkeCluster$gcp:container/cluster:Cluster::weir-prod"
    bad = changed(GOOD_CLUSTER, "deletionProtection", False)
    assert policy.check_all([(urn, policy.CLUSTER, bad)]) == [
        f"{urn}: deletion-protection-in-prod: cluster of stack prod must have deletionProtection on"]


@pytest.mark.parametrize("variant", ["dev", "staging", "prod", "dev-autopilot"])
def test_the_program_passes_its_policies(programs, variant):
    program = programs[variant]
    assert policy.check_all((r["urn"], r["type"], r["inputs"]) for r in program.resources) == []


def test_the_policy_pack_wraps_every_policy():
    text = (settings.ROOT / "infra" / "policypack" / "__main__.py").read_text(encoding="utf-8")
    assert "policy.POLICIES" in text and "EnforcementLevel.MANDATORY" in text
    assert len({p.name for p in policy.POLICIES}) == len(policy.POLICIES) == 5
