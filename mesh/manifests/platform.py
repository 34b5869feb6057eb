"""The mesh platform as data: the `weir-system` namespace, RBAC, the control plane (Deployment + Service
`weir-control`) and the mesh-wide PeerAuthentication. CRDs are `mesh.manifests.crds`, the ingress gateway
`mesh.manifests.gateway`.

RBAC is least privilege: the control plane reads the seven Istio kinds, Services, EndpointSlices and Pods,
reviews tokens (workload identity for CSRs), publishes the root certificate ConfigMap `weir-ca-root-cert`
into meshed namespaces, and keeps its CA in the Secret `weir-system/weir-ca` (a Role, not cluster-wide).
"""

from __future__ import annotations

from typing import Any

import mesh.api as api
from mesh.manifests import crds, injection
from mesh.manifests.settings import ManifestSettings

SYSTEM_NAMESPACE = "weir-system"
CONTROL_NAME = "weir-control"  # ServiceAccount, ClusterRole(Binding), Role(Binding), Deployment, Service
ADMIN_BINDING = "weir-cluster-admin"
CA_SECRET = "weir-ca"
HTTP_API_PORT = 15010  # meshctl's API: loopback in the pod (kubectl port-forward), never a Service port
MESH_CHANNEL_PORT = 15012  # the TLS mesh channel: discovery and CSRs (Istio's 15012)
STATE_DIR = "/var/run/weir"
RUN_AS_USER = 10001
LABELS = {"app": CONTROL_NAME, "app.kubernetes.io/name": CONTROL_NAME, "app.kubernetes.io/part-of": "weir"}

Obj = dict[str, Any]


def _meta(name: str, namespace: str | None = SYSTEM_NAMESPACE, labels: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels if labels is not None else LABELS)
    return meta


def namespaces() -> list[Obj]:
    """`weir-system` (bookinfo's namespace is `mesh.manifests.bookinfo.namespace`)."""
    return [{"apiVersion": "v1", "kind": "Namespace",
             "metadata": _meta(SYSTEM_NAMESPACE, None, {"app.kubernetes.io/part-of": "weir"})}]


CA_SECRET = "weir-ca"  # mesh.control.ca_store's Secret (Istio's cacerts)


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> Obj:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def cluster_role() -> Obj:
    by_group: dict[str, list[str]] = {}
    for cls in api.KINDS.values():
        by_group.setdefault(cls.GROUP, []).append(crds.plural(cls.KIND))
    read = ["get", "list", "watch"]
    rules = [_rule([group], sorted(plurals), read) for group, plurals in sorted(by_group.items())]
    rules += [
        _rule([""], ["services", "pods"], ["list", "watch"]),
        _rule([""], ["namespaces"], ["list", "watch"]),  # which namespaces get the root ConfigMap
        _rule(["discovery.k8s.io"], ["endpointslices"], ["list", "watch"]),
        _rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
        _rule([""], ["configmaps"], ["get", "create", "update"]),  # weir-ca-root-cert in meshed namespaces
    ]
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": _meta(CONTROL_NAME, None), "rules": rules}


def _binding(kind: str, name: str, role_kind: str, role: str, subjects: list[Obj],
             namespace: str | None = None) -> Obj:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": _meta(name, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": subjects}


def rbac(settings: ManifestSettings) -> list[Obj]:
    """ServiceAccount, ClusterRole + binding, the CA Secret Role + binding, and the admin binding."""
    control = [{"kind": "ServiceAccount", "name": CONTROL_NAME, "namespace": SYSTEM_NAMESPACE}]
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(CONTROL_NAME),
            # Only the CA Secret can be read (gateway credentials live in weir-system too); `create` cannot be
            # limited by name in Kubernetes, so it stands alone: the first control plane creates weir-ca.
            "rules": [{**_rule([""], ["secrets"], ["get"]), "resourceNames": [CA_SECRET]},
                      _rule([""], ["secrets"], ["create"])]}
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(CONTROL_NAME)},
        cluster_role(),
        _binding("ClusterRoleBinding", CONTROL_NAME, "ClusterRole", CONTROL_NAME, control),
        role,
        _binding("RoleBinding", CONTROL_NAME, "Role", CONTROL_NAME, control, SYSTEM_NAMESPACE),
    ]
    if settings.admin_users:  # the article's step 1: "administrator rights to our user"
        users = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                 for user in settings.admin_users]
        objects.append(_binding("ClusterRoleBinding", ADMIN_BINDING, "ClusterRole", "cluster-admin", users))
    return objects


def _control_args(settings: ManifestSettings) -> list[str]:
    return [
        "--platform", "kubernetes",
        "--port", str(HTTP_API_PORT),
        "--tls-host", "0.0.0.0",
        "--tls-port", str(MESH_CHANNEL_PORT),
        "--state-dir", STATE_DIR,
        "--root-namespace", SYSTEM_NAMESPACE,
        "--outbound-policy", settings.outbound_policy,
        "--workload-cert-ttl", settings.workload_cert_ttl,
        "--ca-secret", f"{SYSTEM_NAMESPACE}/{CA_SECRET}",
        "--token-audience", injection.TOKEN_AUDIENCE,
    ]  # fmt: skip


# /ready is on the loopback-only HTTP API, which the kubelet cannot reach: probe it from inside the pod.
_READY_CHECK = ["python", "-c", "import urllib.request as u; "
                f"u.urlopen('http://127.0.0.1:{HTTP_API_PORT}/ready', timeout=2)"]


def _control_container(settings: ManifestSettings) -> Obj:
    return {
        "name": "control",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "mesh.control"],
        "args": _control_args(settings),
        "ports": [{"name": "https-mesh", "containerPort": MESH_CHANNEL_PORT, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": _READY_CHECK}, "initialDelaySeconds": 2, "periodSeconds": 5,
                           "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {"tcpSocket": {"port": MESH_CHANNEL_PORT}, "initialDelaySeconds": 10,
                          "periodSeconds": 10, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}],
    }


def control_plane(settings: ManifestSettings) -> list[Obj]:
    """Deployment + Service `weir-control` in weir-system."""
    selector = {"app": CONTROL_NAME}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(CONTROL_NAME),
        "spec": {
            "replicas": settings.control_plane_replicas,
            "selector": {"matchLabels": dict(selector)},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "serviceAccountName": CONTROL_NAME,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
                                        "fsGroup": RUN_AS_USER, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [_control_container(settings)],
                    "volumes": [{"name": "state", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(CONTROL_NAME),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "https-mesh", "port": MESH_CHANNEL_PORT, "targetPort": MESH_CHANNEL_PORT,
                       "protocol": "TCP", "appProtocol": "https"}],
        },
    }
    return [deployment, service]


def mesh_peer_authentication(settings: ManifestSettings) -> Obj:
    """Mesh-wide mTLS mode: PeerAuthentication `default` in the root namespace (a custom resource)."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": SYSTEM_NAMESPACE},
        "spec": {"mtls": {"mode": settings.mtls_mode}},
    }
