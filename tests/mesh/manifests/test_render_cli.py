"""`meshctl render --stack S -o DIR` and the stack keys it reads (weir:image, weir:adminUsers, weir:mtlsMode)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mesh import cli
from mesh.local import errors
from mesh.local import stack as stack_mod
from mesh.manifests import stack
from mesh.manifests.settings import DEFAULT_IMAGE, ManifestSettings

ROOT = Path(__file__).resolve().parents[3]


def test_render_writes_the_three_groups_in_apply_order(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    result = CliRunner().invoke(cli.main, ["render", "--stack", "staging", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["bookinfo.yaml", "platform.yaml", "routing.yaml"]
    settings = stack_mod.load("staging", ROOT)
    expected = stack.render(ManifestSettings(stack="staging", image=settings.image,
                                             routing=settings.routing_resources(),
                                             admin_users=settings.admin_users, mtls_mode=settings.mtls_mode,
                                             outbound_policy=settings.outbound_policy,
                                             workload_cert_ttl=settings.workload_cert_ttl or "24h"))
    for group, objects in expected.items():
        docs = [d for d in yaml.safe_load_all((out / f"{group}.yaml").read_text()) if d is not None]
        assert docs == objects, group
        assert f"{group}.yaml: {len(objects)} objects" in result.output


def test_render_needs_an_output_dir_and_a_known_stack(tmp_path: Path) -> None:
    assert CliRunner().invoke(cli.main, ["render", "--stack", "dev"]).exit_code == 2
    result = CliRunner().invoke(cli.main, ["render", "--stack", "nope", "-o", str(tmp_path)])
    assert result.exit_code == 1 and "stack 'nope'" in result.output


def _parse(tmp_path: Path, **config) -> stack_mod.StackSettings:
    (tmp_path / "stacks" / "routing").mkdir(parents=True)
    (tmp_path / "stacks" / "routing" / "r.yaml").write_text("")
    doc = {"config": {"weir:routing": "r", "weir:local": {"ingressPort": 1, "controlPlanePort": 2, "portBase": 3},
                      **config}}
    return stack_mod.parse(doc, stack="t", root=tmp_path, source=tmp_path / "Pulumi.t.yaml")


def test_kubernetes_stack_keys_and_defaults(tmp_path: Path) -> None:
    default = _parse(tmp_path)
    assert (default.image, default.admin_users, default.mtls_mode) == (DEFAULT_IMAGE, (), "PERMISSIVE")
    assert DEFAULT_IMAGE == "ghcr.io/weir-mesh/weir:0.1.0"


def test_kubernetes_stack_keys_set(tmp_path: Path) -> None:
    s = _parse(tmp_path, **{"weir:image": "r.example/weir:2", "weir:adminUsers": ["a@x.io", "b@x.io"],
                            "weir:mtlsMode": "STRICT"})
    assert (s.image, s.admin_users, s.mtls_mode) == ("r.example/weir:2", ("a@x.io", "b@x.io"), "STRICT")


@pytest.mark.parametrize(("key", "value"), [("weir:image", ""), ("weir:image", "a b"), ("weir:adminUsers", "a@x.io"),
                                            ("weir:adminUsers", [1]), ("weir:mtlsMode", "strict")])
def test_bad_kubernetes_stack_keys_name_the_key(tmp_path: Path, key: str, value) -> None:
    with pytest.raises(errors.StackError, match=f"key `{key}`"):
        _parse(tmp_path, **{key: value})


def test_render_passes_the_stacks_otlp_endpoint_to_every_proxy(tmp_path: Path, monkeypatch) -> None:
    endpoint = "http://otel-collector.observability.svc:4318"
    staging = dataclasses.replace(stack_mod.load("staging", ROOT), otlp_endpoint=endpoint)
    monkeypatch.setattr(stack_mod, "load", lambda name: staging)
    result = CliRunner().invoke(cli.main, ["render", "--stack", "staging", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    text = "".join((tmp_path / f"{group}.yaml").read_text() for group in ("platform", "bookinfo"))
    assert text.count(f"- {endpoint}\n") == 7  # the ingress gateway and six sidecars
