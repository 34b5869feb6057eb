"""The local service registry, `registry.json`: the endpoints seam of the control plane on a laptop.

The supervisor rewrites it (atomically) whenever a workload's readiness changes; the control plane
polls it. A workload is ready when all its processes (app and sidecar) answer their readiness URL.
Each write carries the supervisor's next `generation`; the control plane reports the generation its
current snapshot was built from (`/debug/push_status`), which is how mesh.local.lifecycle knows its
change has been read. Shape: docs/architecture.md, "Registry".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mesh.local import plan as plan_mod
from mesh.local import statedir


def document(plan: plan_mod.Plan, ready: Mapping[str, bool], generation: int = 0) -> dict[str, Any]:
    """registry.json's content for `plan`, given which processes (by name) are ready."""
    return {
        "generation": generation,
        "services": [dict(service) for service in plan.services],
        "workloads": [_workload(w, ready) for w in plan.workloads],
    }


def write(path: Path, plan: plan_mod.Plan, ready: Mapping[str, bool], generation: int = 0) -> dict[str, Any]:
    doc = document(plan, ready, generation)
    statedir.write_json(path, doc)
    return doc


def _workload(workload: plan_mod.Workload, ready: Mapping[str, bool]) -> dict[str, Any]:
    return {
        "name": workload.name,
        "namespace": workload.namespace,
        "labels": dict(workload.labels),
        "serviceAccount": workload.service_account,
        "address": plan_mod.LOOPBACK,
        "port": workload.port,
        "ready": all(ready.get(name, False) for name in workload.processes),
    }
