"""Sidecar injection, the one function that turns a Deployment into a meshed one: `inject_sidecar`.

Adds the `weir-proxy` container (`python -m mesh.proxy --role sidecar …`, the flags of
docs/architecture.md with the pod's ports 15006/15001/15000) as a Kubernetes native sidecar (the first
`initContainers` entry with `restartPolicy: Always`, Kubernetes ≥ 1.29, GKE included): its startupProbe on
the health port holds the app until the proxy is ready (Istio's holdApplicationUntilProxyStarts), and on
termination the kubelet stops the app first and the proxy after it, which then drains (mesh.proxy.drain).
It points the app at the proxy through `HTTP_PROXY`,
mounts an audience-bound service-account token for the CA (TokenReview proves the pod's identity), the
mesh root certificate (ConfigMap `weir-ca-root-cert`, Istio's `istio-ca-root-cert`: the only trust for the
control plane's TLS mesh channel) and a memory-backed directory for the proxy's own key and certificate
(the key never leaves the pod), and annotates the pod for Prometheus. With `otlp_endpoint` (the stack's
`weir:otlpEndpoint`) the proxy also exports its spans to that OpenTelemetry collector. Pure:
the input is never mutated, and injecting twice is the same as injecting once.
"""

from __future__ import annotations

import copy
import json
from typing import Any

SIDECAR_CONTAINER = "weir-proxy"
STATUS_ANNOTATION = "sidecar.weir.dev/status"
CONTROL_PLANE_HOST = "weir-control.weir-system.svc"
DEFAULT_CONTROL_PLANE = f"{CONTROL_PLANE_HOST}:15012"  # the TLS mesh channel (discovery + certificates)

ADMIN_PORT = 15000  # loopback only: stats, config dumps, /quitquitquit
HEALTH_PORT = 15021  # pod IP: GET /healthz/ready for the kubelet (Istio's 15021), GET /stats/prometheus
METRICS_PATH = "/stats/prometheus"  # served on HEALTH_PORT too: where the prometheus.io annotations point
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
PROXY_UID = 1337  # Istio's proxy uid, so existing PodSecurity and network policies recognise it

TOKEN_VOLUME = "istio-token"
TOKEN_AUDIENCE = "weir-ca"
TOKEN_MOUNT = "/var/run/secrets/tokens"
TOKEN_EXPIRATION_S = 43200  # the kubelet rotates it at 80% of its life
ROOT_CERT_VOLUME = "weir-ca-root-cert"
ROOT_CERT_CONFIGMAP = "weir-ca-root-cert"  # published in every meshed namespace by the platform
ROOT_CERT_MOUNT = "/var/run/secrets/weir"
ROOT_CERT_KEY = "root-cert.pem"
CERT_VOLUME = "weir-certs"
CERT_MOUNT = "/var/run/weir/certs"
# The proxy's --cert-dir: a directory it creates itself (0700, its own uid) inside the emptyDir, which the
# kubelet makes 0777 and root-owned, and which the proxy could not tighten.
CERT_DIR = f"{CERT_MOUNT}/proxy"

Obj = dict[str, Any]


def is_injected(deployment: Obj) -> bool:
    template = deployment.get("spec", {}).get("template", {})
    annotations = template.get("metadata", {}).get("annotations") or {}
    return STATUS_ANNOTATION in annotations or sidecar_of(template.get("spec", {})) is not None


def sidecar_of(pod_spec: Obj) -> Obj | None:
    """The pod's weir-proxy container: a native sidecar in `initContainers` (or, as before, in `containers`)."""
    for container in [*(pod_spec.get("initContainers") or ()), *(pod_spec.get("containers") or ())]:
        if container.get("name") == SIDECAR_CONTAINER:
            return container
    return None


def inject_sidecar(deployment: Obj, *, proxy_image: str, control_plane: str = DEFAULT_CONTROL_PLANE,
                   otlp_endpoint: str | None = None) -> Obj:
    """A new Deployment dict with the sidecar added; an injected one comes back unchanged (as a copy)."""
    out = copy.deepcopy(deployment)
    if is_injected(out):
        return out
    template = out["spec"]["template"]
    pod = template["spec"]
    containers = pod.get("containers") or []
    if not containers:
        raise ValueError(
            f"deployment {out['metadata'].get('name')}: no containers to inject a sidecar next to"
        )
    app = _app_container(containers)
    labels = dict(template.get("metadata", {}).get("labels") or {})
    _set_env(app, "HTTP_PROXY", f"http://127.0.0.1:{OUTBOUND_PORT}")
    sidecar = _sidecar(
        proxy_image,
        control_plane,
        workload=out["metadata"]["name"],
        labels=labels,
        service_account=pod.get("serviceAccountName", "default"),
        app_port=_app_port(app),
        otlp_endpoint=otlp_endpoint,
    )
    # First: the kubelet starts init containers in order, so later ones (and the app) find the proxy ready.
    pod["initContainers"] = [sidecar, *(pod.get("initContainers") or ())]
    pod.setdefault("volumes", []).extend(proxy_volumes())
    meta = template.setdefault("metadata", {})
    meta.setdefault("labels", {})["security.istio.io/tlsMode"] = "istio"
    meta.setdefault("annotations", {}).update(_annotations(proxy_image, app["name"]))
    return out


def _app_container(containers: list[Obj]) -> Obj:
    """The container named `app`, else the first one."""
    for container in containers:
        if container.get("name") == "app":
            return container
    return containers[0]


def _app_port(app: Obj) -> int:
    ports = app.get("ports") or []
    for port in ports:
        if port.get("name") == "http":
            return int(port["containerPort"])
    if ports:
        return int(ports[0]["containerPort"])
    raise ValueError(
        f"container {app.get('name')}: no containerPort for the sidecar to forward inbound traffic to"
    )


def _set_env(container: Obj, name: str, value: str) -> None:
    env = [item for item in container.get("env") or [] if item.get("name") != name]
    env.append({"name": name, "value": value})
    container["env"] = env


def _field_env(name: str, field_path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def _sidecar(
    image: str,
    control_plane: str,
    *,
    workload: str,
    labels: dict[str, str],
    service_account: str,
    app_port: int,
    otlp_endpoint: str | None,
) -> Obj:
    args = [
        "--role", "sidecar",
        "--id", "$(POD_NAME).$(POD_NAMESPACE)",
        "--namespace", "$(POD_NAMESPACE)",
        "--workload", workload,
        "--labels", ",".join(f"{key}={value}" for key, value in sorted(labels.items())),
        "--service-account", service_account,
        "--control-plane", control_plane,
        "--control-plane-sni", control_plane.rpartition(":")[0],
        "--ca-file", f"{ROOT_CERT_MOUNT}/{ROOT_CERT_KEY}",
        "--cert-dir", CERT_DIR,
        "--inbound-port", str(INBOUND_PORT),
        "--outbound-port", str(OUTBOUND_PORT),
        "--app-port", str(app_port),
        "--admin-port", str(ADMIN_PORT),
        "--inbound-bind", "0.0.0.0",
        "--address", "$(INSTANCE_IP)",
        "--health-port", str(HEALTH_PORT),
        *otlp_args(otlp_endpoint),
    ]  # fmt: skip
    return {
        "name": SIDECAR_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "mesh.proxy"],
        "args": args,
        "env": proxy_env(),
        "ports": [
            {"name": "weir-inbound", "containerPort": INBOUND_PORT, "protocol": "TCP"},
            {"name": "weir-outbound", "containerPort": OUTBOUND_PORT, "protocol": "TCP"},
            {"name": "weir-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
            {"name": "weir-health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        "restartPolicy": "Always",  # a native sidecar: runs beside the app, started before, stopped after it
        "startupProbe": startup_probe(),
        "readinessProbe": readiness_probe(),
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "securityContext": proxy_security_context(),
        "volumeMounts": proxy_volume_mounts(),
    }


# The pieces every proxy container in a pod shares (sidecars here, the ingress gateway in
# `mesh.manifests.gateway`): identity env, the readiness probe, the security context and the volumes.


def otlp_args(endpoint: str | None) -> list[str]:
    """`--otlp-endpoint URL` when the stack names an OpenTelemetry collector, else nothing."""
    return ["--otlp-endpoint", endpoint] if endpoint else []


def proxy_env() -> list[Obj]:
    return [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("INSTANCE_IP", "status.podIP"),
        _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        {"name": "WEIR_TOKEN_FILE", "value": f"{TOKEN_MOUNT}/{TOKEN_VOLUME}"},
    ]


def readiness_probe() -> Obj:
    """The admin's ready latch, served on the pod IP by `--health-port` (the admin stays on loopback)."""
    return {
        "httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT},
        "initialDelaySeconds": 1,
        "periodSeconds": 2,
        "failureThreshold": 30,
    }


def startup_probe() -> Obj:
    """Until it succeeds the app container is not started: the proxy is ready (view applied, listeners
    bound) before the app's first outbound call. Istio's values: every second, for up to 10 minutes."""
    return {
        "httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT},
        "periodSeconds": 1,
        "timeoutSeconds": 3,
        "failureThreshold": 600,
    }


def proxy_security_context() -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": PROXY_UID,
        "runAsGroup": PROXY_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def proxy_volume_mounts() -> list[Obj]:
    return [
        {"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT, "readOnly": True},
        {"name": ROOT_CERT_VOLUME, "mountPath": ROOT_CERT_MOUNT, "readOnly": True},
        {"name": CERT_VOLUME, "mountPath": CERT_MOUNT},
    ]


def proxy_volumes() -> list[Obj]:
    """The token (audience weir-ca), the mesh root ConfigMap and the in-memory key/certificate dir."""
    token = {"audience": TOKEN_AUDIENCE, "expirationSeconds": TOKEN_EXPIRATION_S, "path": TOKEN_VOLUME}
    return [
        {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}},
        {"name": ROOT_CERT_VOLUME, "configMap": {"name": ROOT_CERT_CONFIGMAP}},
        {"name": CERT_VOLUME, "emptyDir": {"medium": "Memory"}},
    ]


def _annotations(proxy_image: str, app_container: str) -> dict[str, str]:
    status = {"initContainers": [SIDECAR_CONTAINER], "volumes": [TOKEN_VOLUME, ROOT_CERT_VOLUME, CERT_VOLUME],
              "image": proxy_image}
    return {
        STATUS_ANNOTATION: json.dumps(status, separators=(",", ":")),
        "kubectl.kubernetes.io/default-container": app_container,
        **prometheus_annotations(),
    }


def prometheus_annotations() -> dict[str, str]:
    """Istio's scrape annotations, pointing at the health port: the admin port is loopback-only in the pod,
    the health port listens on the pod IP, serves the proxy's metrics and is let in by `sidecar_only_ingress`."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(HEALTH_PORT), "prometheus.io/path": METRICS_PATH}


def sidecar_only_ingress(namespace: str) -> Obj:
    """A NetworkPolicy letting into a meshed namespace's pods only what goes through the sidecar: its
    inbound port and the health port (the kubelet's readiness probe and Prometheus' scrape). Weir redirects nothing with iptables, so without it a pod
    could call an app's own port directly and skip mTLS and authorization (GKE Dataplane V2 enforces it;
    the sidecar reaches its app over the pod's loopback, which no NetworkPolicy filters)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "weir-sidecar-only", "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "weir"}},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": INBOUND_PORT},
                                   {"protocol": "TCP", "port": HEALTH_PORT}]}],
        },
    }

