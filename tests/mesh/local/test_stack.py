"""Stack file parsing: good files give frozen settings, bad ones an error naming the file and the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from mesh.local import errors, stack

GOOD = {"config": {"weir:routing": "baseline",
                   "weir:local": {"ingressPort": 8080, "controlPlanePort": 15010, "portBase": 21000}}}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(stack.HOME_ENV, raising=False)
    (tmp_path / "stacks" / "routing").mkdir(parents=True)
    (tmp_path / "stacks" / "routing" / "baseline.yaml").write_text("kind: VirtualService\n")
    return tmp_path


def write_stack(root: Path, doc: object, name: str = "dev") -> None:
    (root / "stacks" / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(doc))


def test_load_good_stack(root: Path) -> None:
    write_stack(root, GOOD)
    settings = stack.load("dev", root)
    assert (settings.ingress_port, settings.control_plane_port, settings.port_base) == (8080, 15010, 21000)
    assert settings.routing_file == root / "stacks" / "routing" / "baseline.yaml"
    assert settings.state_dir == root / ".weir" / "dev"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port_base = 1  # type: ignore[misc]


@pytest.mark.parametrize(("mesh_config", "mode"), [
    (None, "ALLOW_ANY"),
    ({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}, "REGISTRY_ONLY"),
    ({"outboundTrafficPolicy": {}}, "ALLOW_ANY"),
])
def test_outbound_traffic_policy_from_mesh_config(root: Path, mesh_config, mode: str) -> None:
    config = dict(GOOD["config"])
    if mesh_config is not None:
        config["weir:meshConfig"] = mesh_config
    write_stack(root, {"config": config})
    assert stack.load("dev", root).outbound_policy == mode


def test_weir_home_overrides_state_root(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_stack(root, GOOD)
    monkeypatch.setenv(stack.HOME_ENV, str(tmp_path / "home"))
    assert stack.load("dev", root).state_dir == (tmp_path / "home" / "dev").resolve()


def test_root_found_from_a_subdirectory(root: Path) -> None:
    write_stack(root, GOOD)
    (root / "a" / "b").mkdir(parents=True)
    assert stack.find_root(root / "a" / "b") == root


def test_mesh_channel_port_is_set_or_derived(root: Path) -> None:
    write_stack(root, GOOD)
    assert stack.load("dev", root).mesh_channel_port == 15012  # controlPlanePort + 2, Istio's 15010/15012
    doc = {"config": {**GOOD["config"], "weir:local": {**GOOD["config"]["weir:local"], "controlPlaneTlsPort": 16000}}}
    write_stack(root, doc)
    settings = stack.load("dev", root)
    assert (settings.control_plane_tls_port, settings.mesh_channel_port) == (16000, 16000)


def test_ingress_tls_port_is_set_or_derived(root: Path) -> None:
    write_stack(root, GOOD)
    assert stack.load("dev", root).ingress_tls_port == 8443  # HTTPS Gateway servers: ingressPort + 363
    doc = {"config": {**GOOD["config"], "weir:local": {**GOOD["config"]["weir:local"], "ingressTlsPort": 9443}}}
    write_stack(root, doc)
    assert stack.load("dev", root).ingress_tls_port == 9443


def test_dashboard_port_is_set_or_derived(root: Path) -> None:
    write_stack(root, GOOD)
    control = stack.load("dev", root).control_plane_port
    assert stack.load("dev", root).dashboard_port == control + 4991  # 15010 → 20001, Kiali's port
    doc = {"config": {**GOOD["config"], "weir:local": {**GOOD["config"]["weir:local"], "dashboardPort": 20555}}}
    write_stack(root, doc)
    assert stack.load("dev", root).dashboard_port == 20555


def test_workload_cert_ttl_reaches_the_control_plane(root: Path) -> None:
    from mesh.local import plan

    write_stack(root, GOOD)
    assert stack.load("dev", root).workload_cert_ttl is None
    write_stack(root, {"config": {**GOOD["config"], "weir:security": {"workloadCertTtl": "90m"}}})
    settings = stack.load("dev", root)
    assert settings.workload_cert_ttl == "90m"
    command = plan.build(settings, [], []).process("control").command
    assert command[command.index("--workload-cert-ttl") + 1] == "90m"


@pytest.mark.parametrize("ttl", ["24h", "90m", "30s", "1.5h", "1h30m", "500ms", "1d", "0s", "3600", "", "-1h",
                                 "1 h", "h"])
def test_workload_cert_ttl_is_what_the_control_plane_takes(root: Path, ttl: str) -> None:
    """A TTL the stack file accepts is exactly one `python -m mesh.control --workload-cert-ttl` accepts."""
    import argparse

    from mesh.control.__main__ import duration

    write_stack(root, {"config": {**GOOD["config"], "weir:security": {"workloadCertTtl": ttl}}})
    try:
        stack.load("dev", root)
        stack_takes = True
    except errors.StackError:
        stack_takes = False
    try:
        duration(ttl)
        control_takes = True
    except argparse.ArgumentTypeError:
        control_takes = False
    assert stack_takes == control_takes


def test_port_strings_from_pulumi_config_are_accepted(root: Path) -> None:
    doc = {"config": {**GOOD["config"], "weir:local": {"ingressPort": "8080", "controlPlanePort": 15010,
                                                       "portBase": 21000}}}
    write_stack(root, doc)
    assert stack.load("dev", root).ingress_port == 8080


@pytest.mark.parametrize(("config", "key"), [
    ({"weir:local": GOOD["config"]["weir:local"]}, "`weir:routing`"),
    ({"weir:routing": "", "weir:local": GOOD["config"]["weir:local"]}, "`weir:routing`"),
    ({"weir:routing": "nope", "weir:local": GOOD["config"]["weir:local"]}, "`weir:routing`"),
    ({"weir:routing": "baseline"}, "`weir:local`"),
    ({"weir:routing": "baseline", "weir:local": "8080"}, "`weir:local`"),
    ({"weir:routing": "baseline", "weir:local": {"ingressPort": 8080, "controlPlanePort": 15010}},
     "`weir:local.portBase`"),
    ({"weir:routing": "baseline", "weir:local": {"ingressPort": 0, "controlPlanePort": 15010, "portBase": 21000}},
     "`weir:local.ingressPort`"),
    ({"weir:routing": "baseline", "weir:local": {"ingressPort": 8080, "controlPlanePort": True, "portBase": 1}},
     "`weir:local.controlPlanePort`"),
    ({"weir:routing": "baseline", "weir:local": {"ingressPort": 8080, "controlPlanePort": 15010,
                                                 "portBase": "x"}}, "`weir:local.portBase`"),
    ({"weir:routing": "baseline", "weir:local": {**GOOD["config"]["weir:local"], "controlPlaneTlsPort": 70000}},
     "`weir:local.controlPlaneTlsPort`"),
    ({**GOOD["config"], "weir:meshConfig": {"outboundTrafficPolicy": {"mode": "DENY"}}},
     "`weir:meshConfig.outboundTrafficPolicy.mode`"),
    ({**GOOD["config"], "weir:meshConfig": "REGISTRY_ONLY"}, "`weir:meshConfig.outboundTrafficPolicy.mode`"),
    ({"weir:routing": "baseline", "weir:local": {**GOOD["config"]["weir:local"], "ingressTlsPort": "https"}},
     "`weir:local.ingressTlsPort`"),
    ({"weir:routing": "baseline", "weir:local": {**GOOD["config"]["weir:local"], "dashboardPort": 0}},
     "`weir:local.dashboardPort`"),
    ({**GOOD["config"], "weir:security": {"workloadCertTtl": "1d"}}, "`weir:security.workloadCertTtl`"),
    ({**GOOD["config"], "weir:security": {"workloadCertTtl": "0s"}}, "`weir:security.workloadCertTtl`"),
    ({**GOOD["config"], "weir:security": {"workloadCertTtl": 30}}, "`weir:security.workloadCertTtl`"),
])
def test_bad_stack_names_the_key(root: Path, config: dict, key: str) -> None:
    write_stack(root, {"config": config})
    with pytest.raises(errors.StackError) as exc:
        stack.load("dev", root)
    assert key in str(exc.value)
    assert "Pulumi.dev.yaml" in str(exc.value)


@pytest.mark.parametrize("doc", [None, [], {"config": None}, {"other": 1}])
def test_missing_config_mapping(root: Path, doc: object) -> None:
    write_stack(root, doc)
    with pytest.raises(errors.StackError, match="`config`"):
        stack.load("dev", root)


def test_unknown_stack_lists_the_known_ones(root: Path) -> None:
    write_stack(root, GOOD, "dev")
    write_stack(root, GOOD, "prod")
    with pytest.raises(errors.StackError, match=r"stack 'qa'.*stacks: dev, prod"):
        stack.load("qa", root)


def test_invalid_yaml(root: Path) -> None:
    (root / "stacks" / "Pulumi.dev.yaml").write_text("config: [\n")
    with pytest.raises(errors.StackError, match="not valid YAML"):
        stack.load("dev", root)


def test_otlp_endpoint_is_unset_by_default_and_checked(root: Path) -> None:
    write_stack(root, GOOD)
    assert stack.load("dev", root).otlp_endpoint is None
    write_stack(root, {"config": {**GOOD["config"], "weir:otlpEndpoint": "http://127.0.0.1:4318"}})
    assert stack.load("dev", root).otlp_endpoint == "http://127.0.0.1:4318"


@pytest.mark.parametrize("value", ["127.0.0.1:4318", "grpc://collector:4317", "http://", 4318, "http://c:99999"])
def test_a_bad_otlp_endpoint_names_the_key(root: Path, value) -> None:
    write_stack(root, {"config": {**GOOD["config"], "weir:otlpEndpoint": value}})
    with pytest.raises(errors.StackError, match="key `weir:otlpEndpoint`: expected an OTLP/HTTP collector"):
        stack.load("dev", root)
