"""A Prometheus scrape configuration for a local environment, so a user's own Prometheus (and a Grafana with
Istio's dashboards, or Kiali pointed at it) reads the mesh's metrics.

Pure: `scrape_config(plan)` turns the local plan (mesh.local.plan: every proxy's admin port and its
workload's labels) into a prometheus.yml document with one static target per proxy, the sidecars and the
ingress gateway, on `/stats/prometheus`. Each target carries the labels Istio's own Prometheus job gives a
pod (its pod labels — `app`, `version`, … — and `namespace`), plus `workload` and `stack`. Istio's dashboards
and Kiali read the metric labels (`destination_workload`, …), not the job, so one job per stack is enough;
its name carries the stack so the files of dev, staging and prod can be merged into one Prometheus.

The control plane has no target: it serves no Prometheus metrics (its counters are JSON, under
`/debug/push_status` and `/debug/ca`).

`meshctl up` writes the file to `<state dir>/prometheus.yml` (`write`); `meshctl prometheus-config` prints it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mesh.local import plan as plan_mod
from mesh.local import statedir

FILE_NAME = "prometheus.yml"
METRICS_PATH = "/stats/prometheus"  # the proxy admin's Prometheus endpoint (docs/architecture.md)
SCRAPE_INTERVAL = "5s"  # a local mesh is small: scrape often, so rate() over 30 s windows is smooth
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def job_name(stack: str) -> str:
    return f"weir-{stack}-envoy-stats"  # Istio's job for proxy stats is `envoy-stats`


def scrape_config(plan: plan_mod.Plan, scrape_interval: str = SCRAPE_INTERVAL) -> dict[str, Any]:
    """prometheus.yml as a dict: `global`, and `scrape_configs` with one job of static targets."""
    workloads = {workload.name: workload for workload in plan.workloads}
    static = []
    for spec in plan.processes:
        if spec.role == plan_mod.ROLE_SIDECAR:
            workload = workloads[spec.workload]
            labels = {**workload.labels, "namespace": workload.namespace}
        elif spec.role == plan_mod.ROLE_GATEWAY:
            labels = {**_pairs(plan_mod.GATEWAY_LABELS), "app": spec.workload,
                      "namespace": plan_mod.GATEWAY_NAMESPACE}
        else:
            continue
        static.append({
            "targets": [f"{plan_mod.LOOPBACK}:{spec.ports['admin']}"],
            "labels": {**_label_names(labels), "workload": spec.workload, "stack": plan.stack},
        })
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [{
            "job_name": job_name(plan.stack),
            "metrics_path": METRICS_PATH,
            "scheme": "http",
            "static_configs": static,
        }],
    }


def render(plan: plan_mod.Plan) -> str:
    header = (f"# Prometheus scrape configuration for Weir stack {plan.stack} (written by meshctl; "
              f"`meshctl prometheus-config --stack {plan.stack}` prints it).\n")
    return header + yaml.safe_dump(scrape_config(plan), sort_keys=False)


def path(state: statedir.StateDir) -> Path:
    return state.path / FILE_NAME


def write(state: statedir.StateDir) -> Path | None:
    """Write `<state dir>/prometheus.yml` from the running plan (`plan.json`); None when there is no plan."""
    doc = statedir.read_json(state.plan_file)
    if not doc:
        return None
    target = path(state)
    statedir.write_text(target, render(plan_mod.Plan.from_json(doc)))
    return target


def _pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if item)


def _label_names(labels: dict[str, str]) -> dict[str, str]:
    """Pod labels as Prometheus label names: `app.kubernetes.io/name` → `app_kubernetes_io_name`, as
    Prometheus' `labelmap` on `__meta_kubernetes_pod_label_*` names them."""
    return {_INVALID_LABEL_CHARS.sub("_", key): str(value) for key, value in labels.items()}
