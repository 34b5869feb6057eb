"""Every valid file of the shared Istio corpus compiles into views a proxy would accept."""

from __future__ import annotations

from pathlib import Path

import pytest

import mesh.api as api
from mesh.control import builder, node, registry, snapshot
from mesh.view import model, wire
from tests.mesh.control.conftest import BOOKINFO, INGRESS, sidecar

CORPUS = Path(__file__).parents[3] / ".." / "shared" / "istio-corpus" / "valid"
FILES = sorted(CORPUS.glob("*.yaml")) if CORPUS.is_dir() else []


@pytest.mark.skipif(not FILES, reason="../shared/istio-corpus is absent")
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_corpus_file_builds(path):
    try:
        resources = api.load_files([path])
    except api.ConfigError as exc:  # the api's own tests own acceptance; here we only need it loaded
        pytest.skip(f"not loaded by mesh.api: {exc}")
    # The corpus has same-named documents meant as separate cases: keep the last one per key.
    resources = list({r.key: r for r in resources}.values())
    snap = snapshot.build_snapshot(resources, registry.parse_registry(BOOKINFO))
    gateways = [INGRESS] + [
        node.make_node(f"gw{i}", "gateway", g.namespace, "gw", dict(g.spec.selector or {}))
        for i, g in enumerate(snap.gateways)
    ]
    for proxy in [sidecar(), sidecar("client-v1", ns="default"), *gateways]:
        view = builder.build_proxy_view(snap, proxy)
        model.check_references(view)
        assert wire.from_dict(wire.to_dict(view)) == view
