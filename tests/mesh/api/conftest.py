"""Builders for Istio documents used across the mesh.api tests."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

# /work/main/tests/mesh/api/conftest.py -> /work/shared/istio-corpus (../shared from the repo root)
CORPUS = Path(__file__).parents[3].parent / "shared" / "istio-corpus"
API_VERSIONS = ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"]
FILE = "stacks/routing/x.yaml"


def doc(
    kind: str,
    spec: Any,
    name: str = "reviews",
    namespace: str | None = "bookinfo",
    api_version: str = "networking.istio.io/v1",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec}


def route_to(host: str = "reviews", subset: str | None = "v1", weight: int | None = None) -> dict[str, Any]:
    dest: dict[str, Any] = {"host": host}
    if subset:
        dest["subset"] = subset
    out: dict[str, Any] = {"destination": dest}
    if weight is not None:
        out["weight"] = weight
    return out


def vs(http: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"hosts": ["reviews"], **spec}
    if http is not None:
        body["http"] = http
    return doc("VirtualService", body)


def dr(**spec: Any) -> dict[str, Any]:
    return doc("DestinationRule", {"host": "reviews", **spec})


def gw(servers: Any = None, **spec: Any) -> dict[str, Any]:
    if servers is None:
        servers = [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]
    return doc(
        "Gateway",
        {"selector": {"istio": "ingressgateway"}, "servers": servers, **spec},
        name="bookinfo-gateway",
    )


def se(**spec: Any) -> dict[str, Any]:
    return doc("ServiceEntry", spec, name="external")


def to_yaml(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


@functools.cache
def corpus_documents(folder: str) -> list[tuple[str, int, Any]]:
    """(file name, document index, parsed document) for every non-empty document in a corpus folder."""
    out = []
    for path in sorted((CORPUS / folder).glob("*.yaml")):
        for i, d in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if d is not None:
                out.append((path.name, i, d))
    return out


def security(kind: str, spec: Any = None, api_version: str = "security.istio.io/v1", **meta: Any) -> dict:
    """A security.istio.io document in namespace bookinfo; `meta` goes into metadata (annotations=...)."""
    body = doc(kind, {} if spec is None else spec, name="policy", api_version=api_version)
    body["metadata"].update(meta)
    return body


def pa(**spec: Any) -> dict[str, Any]:
    return security("PeerAuthentication", spec)


def ap(**spec: Any) -> dict[str, Any]:
    return security("AuthorizationPolicy", spec)


def ra(**spec: Any) -> dict[str, Any]:
    return security("RequestAuthentication", spec)
