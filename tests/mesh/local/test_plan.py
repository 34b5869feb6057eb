"""The plan is pure: ports, commands, env, readiness URLs and start order from settings + manifests."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from mesh.local import errors
from mesh.local import plan as plan_mod
from mesh.local.stack import StackSettings


def deployment(app: str, version: str, env: list | None = None, command: list | None = None) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{app}-{version}", "namespace": "bookinfo", "labels": {"app": app, "version": version}},
        "spec": {"selector": {"matchLabels": {"app": app, "version": version}}, "template": {
            "metadata": {"labels": {"app": app, "version": version}},
            "spec": {"serviceAccountName": app, "containers": [{
                "name": app, "image": f"weir/{app}",
                "command": command or ["python", "-m", f"bookinfo.{app}", "--version", version],
                "env": env if env is not None else [{"name": "RATINGS_URL", "value": "http://ratings.bookinfo:9080"},
                                                    {"name": "PORT", "value": "9080"}],
                "ports": [{"containerPort": 9080}]}]}}},
    }


SERVICES = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "books", "namespace": "bookinfo"},
             "spec": {"selector": {"app": "books"}, "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]}}]


@pytest.fixture
def settings(tmp_path: Path) -> StackSettings:
    return StackSettings(name="dev", root=tmp_path, state_dir=tmp_path / ".weir" / "dev", routing="baseline",
                         routing_file=tmp_path / "stacks/routing/baseline.yaml", ingress_port=8080,
                         control_plane_port=15010, port_base=21000)


@pytest.fixture
def plan(settings: StackSettings) -> plan_mod.Plan:
    return plan_mod.build(settings, [deployment("books", "v1"), deployment("books", "v2")], SERVICES, python="/py")


def test_order_control_then_app_and_sidecar_per_workload_then_gateway(plan: plan_mod.Plan) -> None:
    assert [(p.name, p.role, p.stage) for p in plan.processes] == [
        ("control", "control", 0),
        ("books-v1", "app", 1), ("books-v1.proxy", "sidecar", 1),
        ("books-v2", "app", 1), ("books-v2.proxy", "sidecar", 1),
        ("ingress", "gateway", 2),
    ]


def test_ports_follow_port_base_per_workload(plan: plan_mod.Plan) -> None:
    assert plan.process("books-v1").ports == {"app": 21000, "chaos": 21004}
    assert plan.process("books-v1.proxy").ports == {"inbound": 21001, "outbound": 21002, "admin": 21003}
    assert plan.process("books-v2").ports == {"app": 21010, "chaos": 21014}
    assert plan.process("books-v2.proxy").ports == {"inbound": 21011, "outbound": 21012, "admin": 21013}
    assert plan.process("ingress").ports == {"http": 8080, "https": 8443, "admin": 21009}
    assert plan.process("control").ports == {"http": 15010, "mesh": 15012, "dashboard": 20001}  # 15010 + 4991


def test_commands(plan: plan_mod.Plan, settings: StackSettings) -> None:
    state = settings.state_dir
    assert plan.process("control").command == (
        "/py", "-m", "mesh.control", "--port", "15010", "--tls-port", "15012", "--state-dir", str(state),
        "--registry", str(state / "registry.json"), "--outbound-policy", "ALLOW_ANY", "--dashboard-port", "20001")
    assert plan.process("books-v2").command == ("/py", "-m", "bookinfo.books", "--version", "v2")
    assert plan.process("books-v2.proxy").command == (
        "/py", "-m", "mesh.proxy", "--role", "sidecar", "--id", "books-v2.bookinfo", "--namespace", "bookinfo",
        "--workload", "books-v2", "--labels", "app=books,version=v2", "--service-account", "books",
        "--control-plane", "127.0.0.1:15012", "--ca-file", str(state / "ca" / "root-cert.pem"),
        "--cert-dir", str(state / "proxies" / "books-v2.bookinfo"), "--trace-sampling", "100",
        "--drain-timeout", "4", "--inbound-port", "21011", "--outbound-port", "21012",
        "--app-port", "21010", "--admin-port", "21013")
    assert plan.process("ingress").command == (
        "/py", "-m", "mesh.proxy", "--role", "gateway", "--id", "istio-ingressgateway.weir-system",
        "--namespace", "weir-system", "--workload", "istio-ingressgateway", "--labels", "istio=ingressgateway",
        "--service-account", "istio-ingressgateway-service-account",
        "--control-plane", "127.0.0.1:15012", "--ca-file", str(state / "ca" / "root-cert.pem"),
        "--cert-dir", str(state / "proxies" / "istio-ingressgateway.weir-system"), "--trace-sampling", "100",
        "--drain-timeout", "4", "--port-map", "80=8080,443=8443", "--admin-port", "21009")


def test_each_app_starts_after_its_sidecar_and_nothing_else_waits(plan: plan_mod.Plan) -> None:
    assert {spec.name: spec.after for spec in plan.processes if spec.after} == {
        "books-v1": "books-v1.proxy", "books-v2": "books-v2.proxy"}
    round_trip = plan_mod.Plan.from_json(plan.to_json())
    assert round_trip.process("books-v1").after == "books-v1.proxy"


def test_default_python_is_this_interpreter(settings: StackSettings) -> None:
    built = plan_mod.build(settings, [deployment("books", "v1")], SERVICES)
    assert built.process("books-v1").command[0] == sys.executable
    assert built.process("control").command[0] == sys.executable


def test_app_env_overrides_port_and_keeps_service_urls(plan: plan_mod.Plan) -> None:
    assert plan.process("books-v1").env == {
        "RATINGS_URL": "http://ratings.bookinfo:9080", "PORT": "21000", "HOST": "127.0.0.1",
        "CHAOS_PORT": "21004", "HTTP_PROXY": "http://127.0.0.1:21002"}
    assert plan.process("books-v1.proxy").env == {}


def test_downward_api_fields_resolve_locally(settings: StackSettings) -> None:
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    built = plan_mod.build(settings, [deployment("books", "v1", env=env)], SERVICES)
    assert built.process("books-v1").env["POD_NAME"] == "books-v1"
    secret = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    with pytest.raises(errors.StackError, match="TOKEN"):
        plan_mod.build(settings, [deployment("books", "v1", env=secret)], SERVICES)


def test_readiness_urls_and_logs(plan: plan_mod.Plan) -> None:
    assert {p.name: (p.ready_url, p.log) for p in plan.processes} == {
        "control": ("http://127.0.0.1:15010/ready", "control.log"),
        "books-v1": ("http://127.0.0.1:21000/healthz", "books-v1.log"),
        "books-v1.proxy": ("http://127.0.0.1:21003/ready", "books-v1.proxy.log"),
        "books-v2": ("http://127.0.0.1:21010/healthz", "books-v2.log"),
        "books-v2.proxy": ("http://127.0.0.1:21013/ready", "books-v2.proxy.log"),
        "ingress": ("http://127.0.0.1:21009/ready", "ingress.proxy.log"),
    }


def test_registry_entries(plan: plan_mod.Plan) -> None:
    assert plan.services == ({"name": "books", "namespace": "bookinfo",
                              "ports": [{"name": "http", "port": 9080, "targetPort": 9080}],
                              "selector": {"app": "books"}},)
    assert plan.workloads[1] == plan_mod.Workload(
        name="books-v2", namespace="bookinfo", labels={"app": "books", "version": "v2"}, service_account="books",
        port=21011, processes=("books-v2", "books-v2.proxy"))


def test_proxies_carry_the_identity_they_get_a_bootstrap_token_for(plan: plan_mod.Plan) -> None:
    assert plan.process("books-v2.proxy").identity == {"namespace": "bookinfo", "serviceAccount": "books",
                                                        "proxyId": "books-v2.bookinfo"}
    assert plan.process("ingress").identity == {"namespace": "weir-system",
                                                 "serviceAccount": "istio-ingressgateway-service-account",
                                                 "proxyId": "istio-ingressgateway.weir-system"}
    assert plan.process("books-v2").identity is None and plan.process("control").identity is None
    assert plan.urls["meshChannel"] == "https://127.0.0.1:15012"
    assert plan.urls["dashboard"] == "http://127.0.0.1:20001/"


def test_plan_round_trips_through_json(plan: plan_mod.Plan) -> None:
    assert plan_mod.Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


@pytest.mark.parametrize(("change", "message"), [
    ({"ingress_port": 21001}, "port 21001 is planned twice"),
    ({"control_plane_port": 21009}, "port 21009 is planned twice"),
    ({"control_plane_tls_port": 21003}, "port 21003 is planned twice"),
    ({"control_plane_tls_port": 15010}, "port 15010 is planned twice: control \\(http\\) and control \\(mesh\\)"),
    ({"port_base": 65530}, "portBase 65530 leaves no room"),
])
def test_port_conflicts_are_stack_errors(settings: StackSettings, change: dict, message: str) -> None:
    import dataclasses

    with pytest.raises(errors.StackError, match=message):
        plan_mod.build(dataclasses.replace(settings, **change), [deployment("books", "v1")], SERVICES)


def test_broken_deployment_is_named(settings: StackSettings) -> None:
    broken = deployment("books", "v1")
    del broken["spec"]["template"]["spec"]["containers"]
    with pytest.raises(errors.StackError, match="deployment books-v1"):
        plan_mod.build(settings, [broken], SERVICES)


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:4318"])
def test_every_proxy_exports_spans_to_the_stacks_otlp_collector_only_when_set(settings: StackSettings,
                                                                             endpoint: str | None) -> None:
    from mesh.proxy import __main__ as proxy_main

    plan = plan_mod.build(dataclasses.replace(settings, otlp_endpoint=endpoint),
                          [deployment("books", "v1"), deployment("books", "v2")], SERVICES, python="/py")
    proxies = [p for p in plan.processes if p.role in (plan_mod.ROLE_SIDECAR, plan_mod.ROLE_GATEWAY)]
    assert [p.name for p in proxies] == ["books-v1.proxy", "books-v2.proxy", "ingress"]
    for proxy in proxies:
        args = list(proxy.command[3:])  # after `python -m mesh.proxy`
        assert proxy_main.parse_args(args).otlp_endpoint == endpoint, proxy.name
        assert args.count("--otlp-endpoint") == (1 if endpoint else 0), proxy.name
    others = [p for p in plan.processes if p not in proxies]
    assert all("--otlp-endpoint" not in p.command for p in others)
