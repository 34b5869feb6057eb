"""The ingress gateway as data: ServiceAccount, Deployment and the LoadBalancer Service
`istio-ingressgateway` in weir-system, labelled `istio=ingressgateway` so the routing's Gateway selects it.

The proxy (`python -m mesh.proxy --role gateway`) maps Gateway server ports 80/443 to 8080/8443 (no root,
no NET_BIND_SERVICE), listens on the pod IP for them, keeps its admin on loopback and answers the kubelet and
Prometheus (the pod's `prometheus.io/*` annotations) on the health port. Identity, trust, key material and
span export (the stack's `weir:otlpEndpoint`) come exactly as for sidecars: `mesh.manifests.injection`'s
proxy helpers.
"""

from __future__ import annotations

from typing import Any

from mesh.manifests import injection
from mesh.manifests.platform import SYSTEM_NAMESPACE
from mesh.manifests.settings import ManifestSettings

NAME = "istio-ingressgateway"  # Deployment and Service
SERVICE_ACCOUNT = "istio-ingressgateway-service-account"
LABELS = {"app": NAME, "istio": "ingressgateway"}
PORTS = ((80, 8080, "http2"), (443, 8443, "https"))  # Service port → container port, name

Obj = dict[str, Any]


def _meta(name: str) -> Obj:
    return {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": dict(LABELS)}


def _args(otlp_endpoint: str | None) -> list[str]:
    return [
        "--role", "gateway",
        "--id", "$(POD_NAME).$(POD_NAMESPACE)",
        "--namespace", "$(POD_NAMESPACE)",
        "--workload", NAME,
        "--labels", ",".join(f"{k}={v}" for k, v in sorted(LABELS.items())),
        "--service-account", SERVICE_ACCOUNT,
        "--control-plane", injection.DEFAULT_CONTROL_PLANE,
        "--control-plane-sni", injection.CONTROL_PLANE_HOST,
        "--ca-file", f"{injection.ROOT_CERT_MOUNT}/{injection.ROOT_CERT_KEY}",
        "--cert-dir", injection.CERT_DIR,
        "--port-map", ",".join(f"{port}={target}" for port, target, _ in PORTS),
        "--admin-port", str(injection.ADMIN_PORT),
        "--inbound-bind", "0.0.0.0",
        "--address", "$(INSTANCE_IP)",
        "--health-port", str(injection.HEALTH_PORT),
        *injection.otlp_args(otlp_endpoint),
    ]  # fmt: skip


def _container(image: str, otlp_endpoint: str | None) -> Obj:
    ports = [{"name": name, "containerPort": target, "protocol": "TCP"} for _, target, name in PORTS]
    ports.append({"name": "weir-health", "containerPort": injection.HEALTH_PORT, "protocol": "TCP"})
    return {
        "name": "istio-proxy",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "mesh.proxy"],
        "args": _args(otlp_endpoint),
        "env": injection.proxy_env(),
        "ports": ports,
        "readinessProbe": injection.readiness_probe(),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}},
        "securityContext": injection.proxy_security_context(),
        "volumeMounts": injection.proxy_volume_mounts(),
    }


def deployment(settings: ManifestSettings) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(NAME),
        "spec": {
            "replicas": settings.ingress_replicas,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {
                "metadata": {
                    "labels": dict(LABELS),
                    "annotations": injection.prometheus_annotations(),
                },
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "automountServiceAccountToken": False,  # the projected, audience-bound token only
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [_container(settings.image, settings.otlp_endpoint)],
                    "volumes": injection.proxy_volumes(),
                },
            },
        },
    }


def service() -> Obj:
    """The only LoadBalancer of the stack: the article's ingress address."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(NAME),
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",  # keep client addresses; kube-proxy health-checks the nodes
            "selector": dict(LABELS),
            "ports": [{"name": name, "port": port, "targetPort": target, "protocol": "TCP"}
                      for port, target, name in PORTS],
        },
    }


def all_objects(settings: ManifestSettings) -> list[Obj]:
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(SERVICE_ACCOUNT)}
    return [account, deployment(settings), service()]
