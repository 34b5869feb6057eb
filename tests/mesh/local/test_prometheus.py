"""The scrape configuration for a user's Prometheus: pure from the plan, valid prometheus.yml structure."""

from __future__ import annotations

import re

import yaml
from click.testing import CliRunner

from mesh import cli
from mesh.local import plan as plan_mod
from mesh.local import prometheus, statedir
from mesh.local import stack as stack_mod
from tests.mesh.local.test_plan import SERVICES, deployment, plan, settings  # noqa: F401 (fixtures)

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
DURATION = re.compile(r"\d+(ms|s|m|h)")


def test_one_target_per_proxy_with_pod_labels(plan: plan_mod.Plan) -> None:  # noqa: F811
    doc = prometheus.scrape_config(plan)
    (job,) = doc["scrape_configs"]
    assert job["job_name"] == "weir-dev-envoy-stats"
    assert job["metrics_path"] == "/stats/prometheus" and job["scheme"] == "http"
    by_workload = {c["labels"]["workload"]: c for c in job["static_configs"]}
    assert by_workload["books-v2"] == {"targets": ["127.0.0.1:21013"], "labels": {
        "app": "books", "version": "v2", "namespace": "bookinfo", "workload": "books-v2", "stack": "dev"}}
    assert by_workload["istio-ingressgateway"] == {"targets": ["127.0.0.1:21009"], "labels": {
        "istio": "ingressgateway", "app": "istio-ingressgateway", "namespace": "weir-system",
        "workload": "istio-ingressgateway", "stack": "dev"}}
    # every proxy's admin port, nothing else (apps and the control plane serve no Prometheus text)
    admin_ports = {f"127.0.0.1:{s.ports['admin']}" for s in plan.processes if "admin" in s.ports}
    assert {t for c in job["static_configs"] for t in c["targets"]} == admin_ports
    assert len(by_workload) == 3


def test_is_prometheus_yaml(plan: plan_mod.Plan) -> None:  # noqa: F811
    """The structure Prometheus' config loader expects: durations, unique job names, host:port targets,
    label names of [a-zA-Z_][a-zA-Z0-9_]* and string values."""
    text = prometheus.render(plan)
    doc = yaml.safe_load(text)
    assert set(doc) == {"global", "scrape_configs"}
    assert all(DURATION.fullmatch(v) for v in doc["global"].values())
    names = [job["job_name"] for job in doc["scrape_configs"]]
    assert len(names) == len(set(names))
    for job in doc["scrape_configs"]:
        assert job["metrics_path"].startswith("/")
        for static in job["static_configs"]:
            assert set(static) == {"targets", "labels"}
            assert all(re.fullmatch(r"[\w.-]+:\d+", t) for t in static["targets"])
            assert all(LABEL_NAME.fullmatch(k) and not k.startswith("__") for k in static["labels"])
            assert all(isinstance(v, str) for v in static["labels"].values())


def test_pod_label_names_are_made_valid(settings) -> None:  # noqa: F811
    odd = deployment("books", "v1")
    odd["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] = "bookinfo"
    built = plan_mod.build(settings, [odd], SERVICES, python="/py")
    (sidecar, _) = prometheus.scrape_config(built)["scrape_configs"][0]["static_configs"]
    assert sidecar["labels"]["app_kubernetes_io_part_of"] == "bookinfo"


def test_write_uses_the_running_plan(tmp_path, plan: plan_mod.Plan) -> None:  # noqa: F811
    state = statedir.StateDir(tmp_path)
    assert prometheus.write(state) is None  # nothing planned yet
    statedir.write_json(state.plan_file, plan.to_json())
    path = prometheus.write(state)
    assert path == tmp_path / "prometheus.yml"
    assert yaml.safe_load(path.read_text()) == prometheus.scrape_config(plan)


def test_meshctl_prometheus_config_prints_the_stack_files_ports(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WEIR_HOME", str(tmp_path))
    result = CliRunner().invoke(cli.main, ["prometheus-config", "--stack", "staging"])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.output)
    staging = stack_mod.load("staging")
    targets = {t for c in doc["scrape_configs"][0]["static_configs"] for t in c["targets"]}
    assert f"127.0.0.1:{staging.port_base + plan_mod.GATEWAY_ADMIN_OFFSET}" in targets
    assert f"127.0.0.1:{staging.port_base + 3}" in targets  # workload 0's admin port
    assert doc["scrape_configs"][0]["job_name"] == "weir-staging-envoy-stats"
