"""mesh.manifests.injection: schema-valid injected Deployments, idempotence, purity and the sidecar's wiring."""

from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest

from mesh.manifests import bookinfo, injection

K8S_VERSION = "1.30"
PROXY_IMAGE = "ghcr.io/weir-mesh/proxy:0.1.0"


def _inject(deployment: dict, **kwargs: str) -> dict:
    return injection.inject_sidecar(deployment, proxy_image=PROXY_IMAGE, **kwargs)


def _by_name(items: list[dict], name: str) -> dict:
    return next(item for item in items if item["name"] == name)


@pytest.mark.parametrize("deployment", bookinfo.deployments(), ids=lambda d: d["metadata"]["name"])
def test_injected_deployment_validates_strictly(deployment: dict) -> None:
    kubernetes_validate.validate(_inject(deployment), K8S_VERSION, strict=True)


@pytest.mark.parametrize("deployment", bookinfo.deployments(), ids=lambda d: d["metadata"]["name"])
def test_injection_is_idempotent_and_pure(deployment: dict) -> None:
    before = copy.deepcopy(deployment)
    once = _inject(deployment)
    assert deployment == before
    assert once != deployment
    twice = _inject(once)
    assert twice == once
    assert twice is not once
    assert injection.is_injected(once) and not injection.is_injected(deployment)


def test_sidecar_wiring() -> None:
    books_v2 = bookinfo.deployments()[3]
    injected = _inject(books_v2, control_plane="cp.example:15012")
    pod = injected["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["app"]
    assert [c["name"] for c in pod["initContainers"]] == ["weir-proxy"]
    proxy = _by_name(pod["initContainers"], "weir-proxy")
    assert proxy["image"] == PROXY_IMAGE
    assert proxy["command"] == ["python", "-m", "mesh.proxy"]
    assert proxy["args"] == [
        "--role", "sidecar",
        "--id", "$(POD_NAME).$(POD_NAMESPACE)",
        "--namespace", "$(POD_NAMESPACE)",
        "--workload", "books-v2",
        "--labels", "app=books,version=v2",
        "--service-account", "books",
        "--control-plane", "cp.example:15012",
        "--control-plane-sni", "cp.example",
        "--ca-file", "/var/run/secrets/weir/root-cert.pem",
        "--cert-dir", "/var/run/weir/certs/proxy",
        "--inbound-port", "15006",
        "--outbound-port", "15001",
        "--app-port", "9080",
        "--admin-port", "15000",
        "--inbound-bind", "0.0.0.0",
        "--address", "$(INSTANCE_IP)",  # node metadata: where the dashboard scrapes the health port
        "--health-port", "15021",
    ]  # fmt: skip
    assert {p["name"]: p["containerPort"] for p in proxy["ports"]} == {
        "weir-inbound": 15006,
        "weir-outbound": 15001,
        "weir-admin": 15000,
        "weir-health": 15021,
    }
    # the kubelet reaches the pod IP: the health port serves the admin's ready latch there, the admin stays
    # on loopback
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in proxy["env"] if "valueFrom" in e}
    assert fields["POD_NAME"] == "metadata.name" and fields["POD_NAMESPACE"] == "metadata.namespace"
    assert proxy["volumeMounts"] == [
        {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": True},
        {"name": "weir-ca-root-cert", "mountPath": "/var/run/secrets/weir", "readOnly": True},
        {"name": "weir-certs", "mountPath": "/var/run/weir/certs"},
    ]
    # The mesh root comes from the platform's ConfigMap; the proxy's key lives in memory, in the pod only.
    assert _by_name(pod["volumes"], "weir-ca-root-cert")["configMap"] == {"name": "weir-ca-root-cert"}
    assert _by_name(pod["volumes"], "weir-certs")["emptyDir"] == {"medium": "Memory"}
    assert proxy["resources"]["limits"] and proxy["securityContext"]["runAsNonRoot"] is True

    token = _by_name(pod["volumes"], "istio-token")["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "weir-ca" and token["path"] == "istio-token"

    app_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert app_env["HTTP_PROXY"] == "http://127.0.0.1:15001"
    assert app_env["RATINGS_URL"] == "http://ratings:9080"


def test_pod_annotations_and_selector_untouched() -> None:
    original = bookinfo.deployments()[0]
    injected = _inject(original)
    annotations = injected["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(annotations["sidecar.weir.dev/status"])["initContainers"] == ["weir-proxy"]
    # the health port: on the pod IP (the admin's 15000 is loopback-only) and serving /stats/prometheus
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "15021")
    assert annotations["prometheus.io/path"] == "/stats/prometheus"
    assert injected["spec"]["selector"] == original["spec"]["selector"]
    labels = injected["spec"]["template"]["metadata"]["labels"]
    assert {k: labels[k] for k in ("app", "version")} == {"app": "ui", "version": "v1"}


def test_existing_http_proxy_is_replaced_not_duplicated() -> None:
    deployment = bookinfo.deployments()[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "HTTP_PROXY", "value": "x"}
    )
    env = _inject(deployment)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == "HTTP_PROXY"] == ["http://127.0.0.1:15001"]


def test_the_sidecar_is_native_started_before_the_app_and_stopped_after_it() -> None:
    """Kubernetes native sidecars (1.29+): an initContainers entry with restartPolicy Always; the kubelet
    starts the app only once its startupProbe passed (holdApplicationUntilProxyStarts) and, on termination,
    stops it after the app containers."""
    pod = _inject(bookinfo.deployments()[2])["spec"]["template"]["spec"]
    proxy = injection.sidecar_of(pod)
    assert proxy is pod["initContainers"][0]
    assert proxy["restartPolicy"] == "Always"
    assert proxy["startupProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    assert proxy["startupProbe"]["periodSeconds"] * proxy["startupProbe"]["failureThreshold"] >= 600
    # the default grace period covers the app's drain and then the proxy's (5 s each)
    assert pod.get("terminationGracePeriodSeconds", 30) >= 10


def test_user_init_containers_run_after_the_sidecar_and_keep_their_order() -> None:
    deployment = bookinfo.deployments()[0]
    deployment["spec"]["template"]["spec"]["initContainers"] = [{"name": "migrate", "image": "m"},
                                                                {"name": "seed", "image": "s"}]
    pod = _inject(deployment)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["weir-proxy", "migrate", "seed"]
    kubernetes_validate.validate(_inject(deployment), K8S_VERSION, strict=True)


def test_a_deployment_injected_the_classic_way_is_recognised() -> None:
    deployment = bookinfo.deployments()[0]
    deployment["spec"]["template"]["spec"]["containers"].append({"name": "weir-proxy", "image": PROXY_IMAGE})
    assert injection.is_injected(deployment)
    assert _inject(deployment) == deployment


def test_deployment_without_containers_is_refused() -> None:
    deployment = bookinfo.deployments()[0]
    deployment["spec"]["template"]["spec"]["containers"] = []
    with pytest.raises(ValueError, match="no containers"):
        _inject(deployment)


@pytest.mark.parametrize("endpoint", [None, "http://otel-collector.observability.svc:4318"])
def test_the_sidecar_exports_spans_only_to_a_configured_otlp_collector(endpoint) -> None:
    from mesh.proxy import __main__ as proxy_main

    injected = _inject(bookinfo.deployments()[1], otlp_endpoint=endpoint)
    kubernetes_validate.validate(injected, K8S_VERSION, strict=True)
    args = injection.sidecar_of(injected["spec"]["template"]["spec"])["args"]
    if endpoint is None:
        assert "--otlp-endpoint" not in args
    else:
        assert args[args.index("--otlp-endpoint") + 1] == endpoint and args.count("--otlp-endpoint") == 1
    assert proxy_main.parse_args(args).otlp_endpoint == endpoint  # the flag the proxy really takes
