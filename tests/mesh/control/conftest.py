"""Shared inputs for the control plane tests: the bookinfo-lite registry and a YAML → snapshot helper."""

from __future__ import annotations

import textwrap

import pytest

import mesh.api as api
from mesh.control import builder, node, registry, snapshot

NS = "bookinfo"

BOOKINFO = {
    "services": [
        {"name": n, "namespace": NS, "ports": [{"name": "http", "port": 9080, "targetPort": 9080}],
         "selector": {"app": n}}
        for n in ("ui", "gw", "books", "ratings")
    ],
    "workloads": [
        {"name": f"{app}-{v}", "namespace": NS, "labels": {"app": app, "version": v}, "serviceAccount": app,
         "address": "127.0.0.1", "port": 21000 + 10 * i + 1, "ready": True}
        for i, (app, v) in enumerate(
            [("ui", "v1"), ("gw", "v1"), ("books", "v1"), ("books", "v2"), ("ratings", "v1"), ("ratings", "v2")]
        )
    ],
}


def fqdn(name: str, ns: str = NS) -> str:
    return f"{name}.{ns}.svc.cluster.local"


def out(name: str, subset: str = "", port: int = 9080, ns: str = NS) -> str:
    return f"outbound|{port}|{subset}|{fqdn(name, ns)}"


def load(text: str, ns: str | None = None) -> list:
    return api.load_text(textwrap.dedent(text), "test.yaml", default_namespace=ns)


def snap(yaml_text: str = "", reg: dict | None = None, policy: str = snapshot.ALLOW_ANY) -> snapshot.Snapshot:
    resources = load(yaml_text) if yaml_text.strip() else []
    return snapshot.build_snapshot(resources, registry.parse_registry(reg or BOOKINFO), policy)


def sidecar(workload: str = "gw-v1", ns: str = NS, **labels: str) -> node.Node:
    app, _, version = workload.rpartition("-")
    return node.make_node(
        f"{workload}.{ns}", "sidecar", ns, workload, labels or {"app": app, "version": version},
        ports={"app": 20000, "inbound": 20001, "outbound": 20002},
    )


INGRESS = node.make_node(
    "istio-ingressgateway.weir-system", "gateway", "weir-system", "istio-ingressgateway",
    {"istio": "ingressgateway"},
)


def view(yaml_text: str = "", proxy: node.Node | None = None, **kw):
    return builder.build_proxy_view(snap(yaml_text, **kw), proxy or sidecar())


@pytest.fixture
def bookinfo() -> dict:
    return BOOKINFO
