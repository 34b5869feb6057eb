"""meshctl through click's CliRunner: exit codes, messages and `-o json` shapes.

Commands that talk to an environment run against a fake one (tests/mesh/local/fake_service.py) started
by the real runtime; validate/analyze run against a stand-in for mesh.api and, when it is importable,
against mesh.api itself.
"""

from __future__ import annotations

import enum
import importlib
import json
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mesh import cli, cli_config
from mesh.local import runtime

from .conftest import fake_plan, settings_for

VS = """apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
"""


def meshctl(*args: str, home: Path | None = None, stdin: str | None = None) -> Result:
    env = {"WEIR_HOME": str(home)} if home else {}
    return CliRunner().invoke(cli.main, list(args), env=env, input=stdin)


# no environment running


@pytest.mark.parametrize("args", [
    ["status"], ["status", "-o", "json"], ["proxy-status"], ["get", "vs"], ["stats", "books-v1"],
    ["proxy-config", "books-v1", "routes"], ["chaos", "books-v1", "--reset"], ["apply", "-f", "-"],
    ["delete", "-f", "-"],
])
def test_commands_need_a_running_environment(tmp_path: Path, args: list[str]) -> None:
    result = meshctl(*args, "--stack", "qa", home=tmp_path, stdin=VS)
    assert result.exit_code == 1
    assert result.stderr == "error: no Weir environment is running for stack qa; run `meshctl up`\n"
    assert "Traceback" not in result.output


def test_stack_defaults_to_dev_and_reads_weir_stack(tmp_path: Path) -> None:
    assert "stack dev;" in meshctl("status", home=tmp_path).stderr
    result = CliRunner().invoke(cli.main, ["status"], env={"WEIR_HOME": str(tmp_path), "WEIR_STACK": "prod"})
    assert "stack prod;" in result.stderr


def test_down_when_nothing_runs_exits_zero(tmp_path: Path) -> None:
    result = meshctl("down", "--stack", "qa", home=tmp_path)
    assert result.exit_code == 0
    assert result.stdout == "no Weir environment is running for stack qa; nothing to stop\n"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    result = meshctl("validate", "-f", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path / 'nope.yaml'}: no such file or directory\n"


# validate / analyze with a stand-in for mesh.api


class FakeConfigError(ValueError):
    def __init__(self, file: str, resource: str, path: str, message: str) -> None:
        super().__init__(f"{file}: {resource}: {path}: {message}")
        self.file, self.resource, self.path, self.message = file, resource, path, message


class Level(enum.Enum):
    WARNING = "Warning"
    ERROR = "Error"


def fake_api(messages: list[types.SimpleNamespace] | None = None) -> types.SimpleNamespace:
    def load_text(text: str, filename: str, default_namespace: str | None = None) -> list:
        if "bad" in text:
            raise FakeConfigError(filename, "VirtualService/bookinfo/bad", "spec.http[0].route", "required")
        return [types.SimpleNamespace(key=f"VirtualService/bookinfo/{Path(filename).stem}")]

    return types.SimpleNamespace(
        ConfigError=FakeConfigError, load_text=load_text, analyze=lambda resources: list(messages or []),
        unenforced_fields=lambda r: ["spec.http[0].mirrorPercentage"] if r.key.endswith("mirror") else [])


@pytest.fixture
def yaml_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cfg"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.yaml").write_text("kind: VirtualService\n")
    (folder / "sub" / "b.yml").write_text("kind: VirtualService\n")
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_validate_all_valid(monkeypatch: pytest.MonkeyPatch, yaml_dir: Path) -> None:
    monkeypatch.setattr(cli_config, "load_api", fake_api)
    result = meshctl("validate", "-f", str(yaml_dir), "-f", "-", stdin="kind: VirtualService\n")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [f"✔ {yaml_dir / 'a.yaml'} (1 resources)",
                                          f"✔ {yaml_dir / 'sub' / 'b.yml'} (1 resources)", "✔ <stdin> (1 resources)"]


def test_validate_reports_each_bad_file_and_exits_1(monkeypatch: pytest.MonkeyPatch, yaml_dir: Path) -> None:
    monkeypatch.setattr(cli_config, "load_api", fake_api)
    (yaml_dir / "c.yaml").write_text("bad: true\n")
    result = meshctl("validate", "-f", str(yaml_dir))
    assert result.exit_code == 1
    assert f"✔ {yaml_dir / 'a.yaml'}" in result.stdout
    assert result.stderr == (f"✘ {yaml_dir / 'c.yaml'}: VirtualService/bookinfo/bad: spec.http[0].route: "
                             f"required\n")


def test_analyze_prints_istio_style_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    warning = types.SimpleNamespace(code="IST0101", level=Level.WARNING, resource_key="VirtualService/bookinfo/reviews",
                                    text='Referenced host+subset in destinationrule not found: "reviews+v3"')
    unenforced = types.SimpleNamespace(code="WEIR0001", level=Level.WARNING, resource_key="VirtualService/bookinfo/mirror",
                                       text="spec.http[0].mirrorPercentage is accepted but not enforced by Weir yet")
    monkeypatch.setattr(cli_config, "load_api", lambda: fake_api([warning, unenforced]))
    (tmp_path / "mirror.yaml").write_text("kind: VirtualService\n")
    result = meshctl("analyze", "-f", str(tmp_path / "mirror.yaml"))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        'Warning [IST0101] (VirtualService bookinfo/reviews) Referenced host+subset in destinationrule not found: '
        '"reviews+v3"',
        "Warning [WEIR0001] (VirtualService bookinfo/mirror) spec.http[0].mirrorPercentage is accepted "
        "but not enforced by Weir yet",
    ]


def test_analyze_exits_non_zero_on_error_level(monkeypatch: pytest.MonkeyPatch) -> None:
    error = types.SimpleNamespace(code="IST0145", level="Error", resource_key="Gateway/bookinfo/gw", text="conflict")
    monkeypatch.setattr(cli_config, "load_api", lambda: fake_api([error]))
    result = meshctl("analyze", "-f", "-", stdin="kind: Gateway\n")
    assert result.exit_code == 1
    assert result.stdout == "Error [IST0145] (Gateway bookinfo/gw) conflict\n"


def test_analyze_schema_error_and_clean_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_config, "load_api", fake_api)
    result = meshctl("analyze", "-f", "-", stdin="bad: 1\n")
    assert result.exit_code == 1
    assert result.stdout.startswith("Error [IST0106] (VirtualService bookinfo/bad) Schema validation error: ")
    clean = meshctl("analyze", "-f", "-", stdin="kind: VirtualService\n")
    assert (clean.exit_code, clean.stdout) == (
        0, "✔ No validation issues found when analyzing 1 resources in 1 files.\n")


# validate / analyze with the real mesh.api


def real_api() -> types.ModuleType:
    try:
        api = importlib.import_module("mesh.api")
    except ImportError as exc:
        pytest.skip(f"mesh.api is not importable yet: {exc}")
    if not all(hasattr(api, name) for name in ("load_text", "ConfigError", "analyze", "unenforced_fields")):
        pytest.skip("mesh.api does not expose load_text/ConfigError/analyze/unenforced_fields yet")
    return api


def test_validate_with_mesh_api(tmp_path: Path) -> None:
    real_api()
    (tmp_path / "good.yaml").write_text(VS)
    (tmp_path / "bad.yaml").write_text(VS.replace("hosts: [reviews]", "hosts: 7"))
    assert meshctl("validate", "-f", str(tmp_path / "good.yaml")).exit_code == 0
    bad = meshctl("validate", "-f", str(tmp_path))
    assert bad.exit_code == 1
    assert f"✔ {tmp_path / 'good.yaml'}" in bad.stdout
    assert str(tmp_path / "bad.yaml") in bad.stderr


def test_analyze_with_mesh_api_finds_the_missing_subset() -> None:
    real_api()
    result = meshctl("analyze", "-f", "-", stdin=VS)
    assert '[IST0101] (VirtualService bookinfo/reviews) Referenced host+subset in destinationrule not found: ' \
           '"reviews+v3"' in result.stdout


# against a running (fake) environment


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("home")
    settings = settings_for(root, name="dev")
    runtime.up(settings, plan=fake_plan(settings), timeout=30)
    try:
        yield root
    finally:
        runtime.down(settings.name, settings.state_dir)


def test_status_json_shape(home: Path) -> None:
    result = meshctl("status", "-o", "json", home=home)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"stack", "stateDir", "supervisor", "urls", "processes", "proxies", "config", "controlPlane",
                        "certificates", "warnings", "release"}
    assert doc["stack"] == "dev"
    assert set(doc["urls"]) == {"ingress", "controlPlane", "meshChannel", "dashboard"}
    assert [(c["proxy"], c["spiffeId"], c["expiresIn"]) for c in doc["certificates"]] == [
        ("books-v1.proxy", "spiffe://cluster.local/ns/bookinfo/sa/books", "50.0m"),
        ("ingress", "spiffe://cluster.local/ns/bookinfo/sa/books", "50.0m")]
    assert doc["warnings"][:2] == [
        "books-v1.proxy: certificate expires in 50.0m, less than a quarter of its 1.0d lifetime: its renewal is "
        "overdue",
        "books-v1.proxy: the last certificate renewal failed (2 in a row): control plane answered 503: TokenReview "
        "failed"]
    assert [p["name"] for p in doc["processes"]] == ["control", "books-v1", "books-v1.proxy", "ingress"]
    assert {key for p in doc["processes"] for key in p} >= {"pid", "status", "ready", "restarts", "ports", "log"}
    assert all(p["ready"] for p in doc["processes"])
    assert doc["config"] == {"synced": 1, "stale": 1}
    assert doc["controlPlane"]["reachable"] is True


def test_status_table(home: Path) -> None:
    result = meshctl("status", home=home)
    assert result.exit_code == 0, result.output
    assert "books-v1.proxy" in result.stdout and "SYNCED" in result.stdout
    assert "config: 1 synced, 1 stale" in result.stdout
    assert "certificates: 2/2 proxies hold a valid workload certificate" in result.stdout
    assert "Warning: ingress: the last certificate renewal failed (2 in a row)" in result.stderr


def test_proxy_status_json(home: Path) -> None:
    rows = json.loads(meshctl("proxy-status", "-o", "json", home=home).stdout)
    assert [(r["proxy"], r["status"]) for r in rows] == [("books-v1.bookinfo", "SYNCED"), ("books-v2.bookinfo", "NACKED")]


def test_proxy_status_table(home: Path) -> None:
    lines = meshctl("proxy-status", home=home).stdout.splitlines()
    assert lines[0].split() == ["PROXY", "SENT", "ACKED", "STATUS", "LAST", "NACK"]
    assert lines[2].split() == ["books-v2.bookinfo", "def456", "abc123", "NACKED", "def456:", "bad", "route"]


def test_apply_prints_kubectl_lines_and_warnings(home: Path, tmp_path: Path) -> None:
    (tmp_path / "reviews.yaml").write_text(VS + "    mirror: {host: reviews}\n")
    result = meshctl("apply", "-f", str(tmp_path / "reviews.yaml"), home=home)
    assert result.exit_code == 0, result.output
    assert result.stdout == "virtualservice.networking.istio.io/reviews configured\n"
    assert result.stderr == "Warning: spec.http[0].mirror: not enforced\n"


def test_apply_rejected_exits_1_with_the_control_plane_error(home: Path) -> None:
    result = meshctl("apply", "-f", "-", home=home, stdin="invalid: yes\n")
    assert result.exit_code == 1
    assert result.stderr == "error: <stdin>: VirtualService/bookinfo/books: spec.http[0].route: required\n"


def test_delete(home: Path, tmp_path: Path) -> None:
    (tmp_path / "reviews.yaml").write_text(VS)
    result = meshctl("delete", "-f", str(tmp_path / "reviews.yaml"), home=home)
    assert result.stdout == "virtualservice.networking.istio.io/reviews deleted\n"
    assert result.stderr == "Warning: destinationrule.networking.istio.io/gone not found\n"


def test_get(home: Path) -> None:
    assert json.loads(meshctl("get", "vs", "books", "-o", "json", home=home).stdout)[0]["kind"] == "VirtualService"
    assert "books" in meshctl("get", "virtualservices", home=home).stdout
    missing = meshctl("get", "vs", "nope", home=home)
    assert (missing.exit_code, missing.stderr) == (1, 'error: vs "nope" not found\n')


def test_proxy_config_stats_and_unknown_workload(home: Path) -> None:
    dump = json.loads(meshctl("proxy-config", "books-v1", "routes", home=home).stdout)
    assert dump == {"version": "abc123", "query": "resource=routes"}
    assert json.loads(meshctl("proxy-config", "books-v1", "secrets", home=home).stdout)["serial"] == "5eed"
    assert json.loads(meshctl("proxy-config", "ingress", home=home).stdout)["query"] == ""
    assert meshctl("stats", "books-v1", home=home).stdout == "istio_requests_total 0\n"
    unknown = meshctl("stats", "nope-v1", home=home)
    assert unknown.exit_code == 1
    assert "unknown workload 'nope-v1'" in unknown.stderr and "books-v1" in unknown.stderr


def test_chaos_set_show_reset(home: Path) -> None:
    set_ = meshctl("chaos", "books-v1", "--error-rate", "0.5", "--delay", "2s", home=home)
    assert json.loads(set_.stdout) == {"error_rate": 0.5, "delay": 2.0}
    assert json.loads(meshctl("chaos", "books-v1", "--delay", "250ms", home=home).stdout)["delay"] == 0.25
    assert json.loads(meshctl("chaos", "books-v1", home=home).stdout) == {"error_rate": 0.5, "delay": 0.25}
    assert json.loads(meshctl("chaos", "books-v1", "--reset", home=home).stdout) == {"error_rate": 0.0, "delay": 0.0}
    assert json.loads(meshctl("chaos", "books-v1", "--status", "503", home=home).stdout)["status"] == 503
    assert meshctl("chaos", "books-v1", "--status", "200", home=home).exit_code == 2
    assert meshctl("chaos", "books-v1", "--reset", "--status", "503", home=home).exit_code == 2
    assert meshctl("chaos", "books-v1", "--delay", "soon", home=home).exit_code == 2
    assert meshctl("chaos", "books-v1", "--error-rate", "2", home=home).exit_code == 2


def test_logs(home: Path) -> None:
    result = meshctl("logs", "books-v1", "--proxy", "--tail", "1", home=home)
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 1
    assert "starting control" in meshctl("logs", "control", home=home).stdout
    assert meshctl("logs", "nope", home=home).exit_code == 1


def test_up_reports_an_already_running_stack(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(home, name="dev")
    monkeypatch.setattr(cli.stack_mod, "load", lambda stack: settings)
    result = meshctl("up", home=home)
    assert result.exit_code == 0, result.output
    assert "stack dev already running" in result.stdout
    assert "virtualservice.networking.istio.io/routing configured" in result.stdout


def test_several_paths_after_one_f(monkeypatch: pytest.MonkeyPatch, yaml_dir: Path) -> None:
    monkeypatch.setattr(cli_config, "load_api", fake_api)
    (yaml_dir / "c.yaml").write_text("bad: true\n")
    result = meshctl("validate", "-f", str(yaml_dir / "a.yaml"), str(yaml_dir / "c.yaml"))
    assert result.exit_code == 1
    assert f"✔ {yaml_dir / 'a.yaml'}" in result.stdout and "c.yaml" in result.stderr
