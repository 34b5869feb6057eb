"""registry.json: services and workloads, a workload ready only when app and sidecar both are, and the
writer's generation."""

from __future__ import annotations

import json
from pathlib import Path

from mesh.local import registry

from .conftest import fake_plan, settings_for


def test_document_and_atomic_write(tmp_path: Path) -> None:
    plan = fake_plan(settings_for(tmp_path))
    inbound = plan.process("books-v1.proxy").ports["inbound"]
    path = tmp_path / "registry.json"
    registry.write(path, plan, {"books-v1": True, "books-v1.proxy": False}, generation=3)
    assert json.loads(path.read_text()) == {
        "generation": 3,
        "services": [{"name": "books", "namespace": "bookinfo",
                      "ports": [{"name": "http", "port": 9080, "targetPort": 9080}], "selector": {"app": "books"}}],
        "workloads": [{"name": "books-v1", "namespace": "bookinfo", "labels": {"app": "books", "version": "v1"},
                       "serviceAccount": "books", "address": "127.0.0.1", "port": inbound, "ready": False}],
    }
    registry.write(path, plan, {"books-v1": True, "books-v1.proxy": True})
    assert json.loads(path.read_text())["workloads"][0]["ready"] is True
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
