"""What the Kubernetes manifests of one stack depend on: the part of a stack's settings that is not cloud.

One frozen object, built by the Pulumi program (`infra.settings`, from Pulumi config) and by `meshctl render`
(from the same `stacks/Pulumi.<env>.yaml`), so both produce the same objects (`mesh.manifests.stack.render`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MTLS_MODES = ("STRICT", "PERMISSIVE", "DISABLE")
OUTBOUND_POLICIES = ("ALLOW_ANY", "REGISTRY_ONLY")  # meshConfig.outboundTrafficPolicy.mode
DEFAULT_IMAGE = "ghcr.io/weir-mesh/weir:0.1.0"  # when the stack sets no `weir:image`
OTLP_ENDPOINT_KEY = "weir:otlpEndpoint"  # every proxy's --otlp-endpoint; unset: no OTLP export


def otlp_endpoint_problem(value: Any) -> str | None:
    """Why `value` is not an OTLP/HTTP collector URL the proxy's --otlp-endpoint takes (http(s)://host[:port],
    spans posted to <url>/v1/traces), None when it is. Both stack readers (mesh.local.stack, infra.settings)
    check it, so a bad one fails `meshctl up` / `pulumi up` rather than every proxy at start."""
    expected = f"expected an OTLP/HTTP collector's http(s)://host:port URL, got {value!r}"
    if not isinstance(value, str) or any(c.isspace() for c in value):
        return expected
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - raises on a port out of range or not a number
    except ValueError as exc:
        return f"{expected}: {exc}"
    return None if url.scheme in ("http", "https") and url.hostname else expected


@dataclass(frozen=True, slots=True)
class ManifestSettings:
    stack: str
    image: str  # the one image holding the mesh and bookinfo-lite (control plane, proxy, apps)
    routing: tuple[dict[str, Any], ...]  # the pinned release's resources (mesh.manifests.releases), as dumped
    admin_users: tuple[str, ...] = ()  # cluster-admin ClusterRoleBinding subjects (the article's step 1)
    mtls_mode: str = "PERMISSIVE"  # the mesh-wide PeerAuthentication in the root namespace
    outbound_policy: str = "ALLOW_ANY"  # meshConfig.outboundTrafficPolicy.mode
    workload_cert_ttl: str = "24h"
    control_plane_replicas: int = 1
    ingress_replicas: int = 1
    otlp_endpoint: str | None = None  # weir:otlpEndpoint: every proxy also exports spans there (OTLP/HTTP)
