"""mesh.manifests.stack.render: every stack's objects are schema-valid (Kubernetes 1.30 for built-in kinds, the
CRDs' own schemas for custom resources), named and placed as infra/ and kubectl expect, in apply order."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import kubernetes_validate
import pytest

from mesh.local import stack as stack_mod
from mesh.manifests import injection, releases, stack
from mesh.manifests.settings import ManifestSettings

from .schema_check import cr_errors

ROOT = Path(__file__).resolve().parents[3]
STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
IMAGE = "europe-docker.pkg.dev/p/weir/weir:1.2.3"
ISTIO_GROUPS = ("networking.istio.io/", "security.istio.io/")


def settings_of(name: str, **overrides) -> ManifestSettings:
    s = stack_mod.load(name, ROOT)
    values = dict(stack=name, image=IMAGE, routing=s.routing_resources(), admin_users=("alice@example.com",),
                  mtls_mode=s.mtls_mode, outbound_policy=s.outbound_policy)
    return ManifestSettings(**{**values, **overrides})


RENDERED = {name: stack.render(settings_of(name)) for name in STACKS}


def _all(name: str) -> list[tuple[str, dict]]:
    return [(group, obj) for group, objs in RENDERED[name].items() for obj in objs]


def _find(objs: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def test_groups_in_apply_order() -> None:
    for rendered in RENDERED.values():
        assert list(rendered) == ["platform", "bookinfo", "routing"]
        platform = [o["kind"] for o in rendered["platform"]]
        assert platform[0] == "Namespace" and platform[-1] == "PeerAuthentication"
        assert platform.index("ServiceAccount") > max(i for i, k in enumerate(platform) if k == "CustomResourceDefinition")
        assert rendered["bookinfo"][0]["kind"] == "Namespace"


@pytest.mark.parametrize("name", STACKS)
def test_every_object_validates(name: str) -> None:
    for group, obj in _all(name):
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"], obj
        if obj["apiVersion"].startswith(ISTIO_GROUPS):
            assert obj["metadata"]["namespace"], obj
            assert cr_errors(obj, RENDERED[name]["platform"]) == [], f"{group}: {obj['kind']}/{obj['metadata']['name']}"
        else:
            kubernetes_validate.validate(obj, "1.30", strict=True)


@pytest.mark.parametrize("name", STACKS)
def test_names_are_unique_and_namespaced_where_needed(name: str) -> None:
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    keys = Counter((o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for _, o in _all(name))
    assert [k for k, n in keys.items() if n > 1] == []
    for kind, namespace, _ in keys:
        assert (namespace is None) == (kind in cluster_scoped), kind
    namespaces = {o["metadata"]["name"] for _, o in _all(name) if o["kind"] == "Namespace"}
    assert namespaces == {"weir-system", "bookinfo"}
    assert {ns for _, ns, _ in keys if ns} <= namespaces


@pytest.mark.parametrize("name", STACKS)
def test_sidecar_injected_exactly_once_per_bookinfo_deployment(name: str) -> None:
    deployments = [o for o in RENDERED[name]["bookinfo"] if o["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == ["ui-v1", "gw-v1", "books-v1", "books-v2",
                                                            "ratings-v1", "ratings-v2"]
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["containers"]] == ["app"]
        assert [c["name"] for c in pod["initContainers"]] == ["weir-proxy"]  # a native sidecar
        assert {c["image"] for c in pod["containers"] + pod["initContainers"]} == {IMAGE}
        assert injection.inject_sidecar(deployment, proxy_image=IMAGE) == deployment
    system = [o for o in RENDERED[name]["platform"] if o["kind"] == "Deployment"]
    assert all("weir-proxy" not in str(d) for d in system)


@pytest.mark.parametrize("name", STACKS)
def test_only_the_ingress_service_is_a_load_balancer(name: str) -> None:
    services = [o for _, o in _all(name) if o["kind"] == "Service"]
    balancers = [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services
                 if s["spec"].get("type") == "LoadBalancer"]
    assert balancers == [("weir-system", "istio-ingressgateway")]
    ingress = _find(services, "Service", "istio-ingressgateway")
    assert [(p["port"], p["targetPort"]) for p in ingress["spec"]["ports"]] == [(80, 8080), (443, 8443)]
    assert ingress["spec"]["selector"]["istio"] == "ingressgateway"


def test_ingress_gateway_deployment() -> None:
    platform = RENDERED["dev"]["platform"]
    deployment = _find(platform, "Deployment", "istio-ingressgateway")
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["istio"] == "ingressgateway"
    assert pod["spec"]["serviceAccountName"] == "istio-ingressgateway-service-account"
    _find(platform, "ServiceAccount", "istio-ingressgateway-service-account")
    (proxy,) = pod["spec"]["containers"]
    args = proxy["args"]
    flag = dict(zip(args[::2], args[1::2]))
    assert proxy["command"] == ["python", "-m", "mesh.proxy"]
    assert flag["--role"] == "gateway" and flag["--port-map"] == "80=8080,443=8443"
    assert flag["--inbound-bind"] == "0.0.0.0" and flag["--health-port"] == "15021"
    assert flag["--control-plane"] == "weir-control.weir-system.svc:15012"
    # the same identity, trust and key material as a sidecar: injection's helpers
    assert pod["spec"]["volumes"] == injection.proxy_volumes()
    assert proxy["volumeMounts"] == injection.proxy_volume_mounts()
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}


def test_control_plane() -> None:
    platform = RENDERED["dev"]["platform"]
    deployment = _find(platform, "Deployment", "weir-control")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    flag = dict(zip(args[::2], args[1::2]))
    assert container["command"] == ["python", "-m", "mesh.control"]
    assert flag["--platform"] == "kubernetes" and flag["--tls-host"] == "0.0.0.0"
    assert (flag["--port"], flag["--tls-port"], flag["--state-dir"]) == ("15010", "15012", "/var/run/weir")
    assert "--registry" not in flag  # endpoints come from EndpointSlices in the cluster
    from mesh.control import __main__ as control_main

    parsed = control_main.parse_args(args)  # the flags the control plane really takes
    assert parsed.platform == "kubernetes" and parsed.registry is None
    assert pod["serviceAccountName"] == "weir-control" and pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "state", "mountPath": "/var/run/weir"} in container["volumeMounts"]
    assert {"name": "state", "emptyDir": {}} in pod["volumes"]
    assert container["readinessProbe"] and container["livenessProbe"] and container["resources"]["limits"]
    service = _find(platform, "Service", "weir-control")
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("https-mesh", 15012)]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_control_plane_rbac_is_least_privilege() -> None:
    platform = RENDERED["dev"]["platform"]
    rules = _find(platform, "ClusterRole", "weir-control")["rules"]
    grants = {(g, r): tuple(rule["verbs"]) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    crd_plurals = {(c["spec"]["group"], c["spec"]["names"]["plural"]) for c in platform
                   if c["kind"] == "CustomResourceDefinition"}
    assert {k for k, v in grants.items() if v == ("get", "list", "watch")} == crd_plurals
    assert grants[("", "services")] == grants[("", "pods")] == grants[("", "namespaces")] == ("list", "watch")
    assert grants[("discovery.k8s.io", "endpointslices")] == ("list", "watch")
    assert grants[("authentication.k8s.io", "tokenreviews")] == ("create",)
    assert grants[("", "configmaps")] == ("get", "create", "update")
    assert ("", "secrets") not in grants and all("*" not in v for v in grants.values())
    role = _find(platform, "Role", "weir-control")
    assert role["metadata"]["namespace"] == "weir-system"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["weir-ca"]},
                             {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = _find(platform, kind, "weir-control")
        assert binding["roleRef"]["kind"] == role_kind
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "weir-control", "namespace": "weir-system"}]


def test_admin_binding_only_with_admin_users() -> None:
    binding = _find(RENDERED["dev"]["platform"], "ClusterRoleBinding", "weir-cluster-admin")
    assert binding["roleRef"]["name"] == "cluster-admin"
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": "alice@example.com"}]
    none = stack.render(settings_of("dev", admin_users=()))["platform"]
    assert not [o for o in none if o["metadata"]["name"] == "weir-cluster-admin"]


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE"])
def test_mesh_wide_peer_authentication(mode: str) -> None:
    platform = stack.render(settings_of("dev", mtls_mode=mode))["platform"]
    policy = _find(platform, "PeerAuthentication", "default")
    assert policy["metadata"]["namespace"] == "weir-system" and policy["spec"] == {"mtls": {"mode": mode}}
    assert cr_errors(policy) == []


@pytest.mark.parametrize("name", STACKS)
def test_routing_is_the_stacks_pinned_release(name: str) -> None:
    settings = stack_mod.load(name, ROOT)
    assert settings.release is not None, "every environment pins a release"
    release = releases.ReleaseStore(ROOT).get(settings.release.ref)
    assert RENDERED[name]["routing"] == list(release.resources)
    assert release.digest == settings.release.digest == releases.digest_of(RENDERED[name]["routing"])
    assert all(o["metadata"]["namespace"] == "bookinfo" for o in RENDERED[name]["routing"])


def test_meshed_namespace_lets_in_only_the_sidecar_ports() -> None:
    (policy,) = [o for o in RENDERED["dev"]["bookinfo"] if o["kind"] == "NetworkPolicy"]
    assert policy["metadata"]["namespace"] == "bookinfo" and policy["spec"]["podSelector"] == {}
    (rule,) = policy["spec"]["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == [15006, 15021]  # never the app's own 9080
    assert "from" not in rule  # any source, but only through the sidecar


@pytest.mark.parametrize("name", STACKS)
def test_every_proxy_pod_is_scraped_on_a_port_prometheus_can_reach(name: str) -> None:
    """Istio's prometheus.io annotations on every pod with a proxy, naming a port the proxy container
    declares, that listens on the pod IP (--health-port with --inbound-bind 0.0.0.0, not the loopback admin),
    and that the namespace's NetworkPolicy, if any, lets in."""
    policies = {obj["metadata"]["namespace"]: obj for _, obj in _all(name) if obj["kind"] == "NetworkPolicy"}
    pods = [obj for _, obj in _all(name) if obj["kind"] == "Deployment"
            and any(c["command"][-1:] == ["mesh.proxy"] for c in _containers(obj["spec"]["template"]["spec"]))]
    assert {p["metadata"]["name"] for p in pods} >= {"istio-ingressgateway", "ratings-v2"}
    for deployment in pods:
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/stats/prometheus"
        port = int(annotations["prometheus.io/port"])
        (proxy,) = [c for c in _containers(template["spec"]) if c["command"][-1:] == ["mesh.proxy"]]
        flag = dict(zip(proxy["args"][::2], proxy["args"][1::2]))
        assert (flag["--health-port"], flag["--inbound-bind"]) == (str(port), "0.0.0.0"), deployment["metadata"]
        assert port in [p["containerPort"] for p in proxy["ports"]]
        policy = policies.get(deployment["metadata"]["namespace"])
        if policy is not None:
            assert port in [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]


def _containers(pod_spec: dict) -> list[dict]:
    """Every container of a pod: native sidecars (initContainers) and the others."""
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def test_render_is_pure() -> None:
    first = stack.render(settings_of("dev"))
    snapshot = copy.deepcopy(first)
    first["platform"][0]["metadata"]["name"] = "mutated"
    deployments = [o for o in first["bookinfo"] if o["kind"] == "Deployment"]
    deployments[-1]["spec"]["template"]["spec"]["containers"].pop()
    assert stack.render(settings_of("dev")) == snapshot


def _proxy_containers(rendered: dict[str, list[dict]]) -> dict[str, dict]:
    """Every proxy container of a stack (the ingress gateway's and each injected sidecar), by Deployment."""
    out = {}
    for obj in rendered["platform"] + rendered["bookinfo"]:
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            for container in [*pod.get("initContainers", ()), *pod["containers"]]:
                if container.get("command") == ["python", "-m", "mesh.proxy"]:
                    out[obj["metadata"]["name"]] = container
    return out


def test_every_proxy_exports_spans_to_the_stacks_otlp_collector_only_when_set() -> None:
    endpoint = "http://otel-collector.observability.svc:4318"
    rendered = stack.render(settings_of("dev", otlp_endpoint=endpoint))
    proxies = _proxy_containers(rendered)
    assert set(proxies) == {"istio-ingressgateway", "ui-v1", "gw-v1", "books-v1", "books-v2", "ratings-v1",
                            "ratings-v2"}
    for name, container in proxies.items():
        args = container["args"]
        assert args[args.index("--otlp-endpoint") + 1] == endpoint, name
    for obj in rendered["platform"] + rendered["bookinfo"]:
        if obj["kind"] == "Deployment":
            kubernetes_validate.validate(obj, "1.30", strict=True)
    for name in STACKS:  # no stack file sets weir:otlpEndpoint: no proxy exports
        assert all("--otlp-endpoint" not in c["args"] for c in _proxy_containers(RENDERED[name]).values())
