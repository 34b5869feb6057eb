"""bookinfo-lite described once, as data: apps, versions and the calls between them, and the Kubernetes
objects built from that table (Namespace, ServiceAccounts, Services, Deployments).

Pure functions returning fresh dicts. Manifest order (ui-v1, gw-v1, books-v1, books-v2, ratings-v1,
ratings-v2) is part of the contract: `mesh.local.plan` numbers workloads in this order to assign ports.
Next: `mesh.manifests.injection.inject_sidecar` adds the proxy to each Deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAMESPACE = "bookinfo"
DEFAULT_IMAGE = "ghcr.io/weir-mesh/bookinfo:0.1.0"
APP_CONTAINER = "app"
APP_PORT = 9080
APP_PORT_NAME = "http"
CHAOS_PORT = 9081  # bound to 127.0.0.1 inside the pod; not exposed as a containerPort
RUN_AS_USER = 10001
INJECTION_LABEL = "weir-injection"  # namespace label, Istio's `istio-injection` counterpart

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class App:
    """One bookinfo-lite app: its versions and the one service it calls (with the env var naming it)."""

    name: str
    versions: tuple[str, ...]
    calls: str | None = None
    url_env: str | None = None


# The whole application, in manifest order.
APPS: tuple[App, ...] = (
    App("ui", ("v1",), calls="gw", url_env="GW_URL"),
    App("gw", ("v1",), calls="books", url_env="BOOKS_URL"),
    App("books", ("v1", "v2"), calls="ratings", url_env="RATINGS_URL"),
    App("ratings", ("v1", "v2")),
)


@dataclass(frozen=True, slots=True)
class Workload:
    """One Deployment: an app at one version."""

    app: App
    version: str

    @property
    def name(self) -> str:
        return f"{self.app.name}-{self.version}"

    @property
    def labels(self) -> dict[str, str]:
        return {"app": self.app.name, "version": self.version}


def workloads() -> tuple[Workload, ...]:
    """Every workload in manifest order."""
    return tuple(Workload(app, version) for app in APPS for version in app.versions)


def service_url(service: str) -> str:
    return f"http://{service}:{APP_PORT}"


def _meta(name: str, labels: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": NAMESPACE}
    if labels:
        meta["labels"] = labels
    return meta


def namespace() -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {INJECTION_LABEL: "enabled"}},
    }


def service_accounts() -> list[Obj]:
    """One per app, named after it: the workload identity the mesh's mTLS certificates carry."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(app.name, {"account": app.name})}
        for app in APPS
    ]


def services() -> list[Obj]:
    """One per app, selecting by `app` only: versions are the mesh's business, not the Service's."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(app.name, {"app": app.name, "service": app.name}),
            "spec": {
                "selector": {"app": app.name},
                "ports": [
                    {"name": APP_PORT_NAME, "port": APP_PORT, "targetPort": APP_PORT, "protocol": "TCP"}
                ],
            },
        }
        for app in APPS
    ]


def _env(workload: Workload) -> list[Obj]:
    env = [
        {"name": "PORT", "value": str(APP_PORT)},
        {"name": "CHAOS_PORT", "value": str(CHAOS_PORT)},
        {"name": "HOST", "value": "0.0.0.0"},
    ]
    if workload.app.calls and workload.app.url_env:
        env.append({"name": workload.app.url_env, "value": service_url(workload.app.calls)})
    return env


def _app_container(workload: Workload, image: str) -> Obj:
    probe = {"httpGet": {"path": "/healthz", "port": APP_PORT_NAME}}
    return {
        "name": APP_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "bookinfo", "--app", workload.app.name, "--version", workload.version],
        "env": _env(workload),
        "ports": [{"name": APP_PORT_NAME, "containerPort": APP_PORT, "protocol": "TCP"}],
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 6},
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "128Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def deployment(workload: Workload, image: str = DEFAULT_IMAGE) -> Obj:
    labels = workload.labels
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(workload.name, dict(labels)),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "serviceAccountName": workload.app.name,
                    "automountServiceAccountToken": False,  # the sidecar gets a projected, audience-bound token
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_app_container(workload, image)],
                },
            },
        },
    }


def deployments(image: str = DEFAULT_IMAGE) -> list[Obj]:
    """One per workload, in manifest order, without sidecars."""
    return [deployment(workload, image) for workload in workloads()]


def all_objects(image: str = DEFAULT_IMAGE) -> list[Obj]:
    """Everything bookinfo-lite needs, in apply order: namespace, identities, services, deployments."""
    return [namespace(), *service_accounts(), *services(), *deployments(image)]
