"""End to end: a routing release promoted across local dev → staging → prod with `meshctl promote`.

One project root holds the three stacks on free ports (their promotion policies shortened to two steps of
one second), each started only while it is needed. The story:
1. staging refuses a release whose source (dev) never passed smoke; nothing changes;
2. dev passes smoke at ratings-50@v1; its canary (ratings-v2) fails in staging (chaos, every answer 500):
   the first step's gates fail, staging is rolled back to exactly what it ran, the command fails;
3. with the canary healthy the same promotion succeeds: staging pins ratings-50@v1 and passed smoke there;
4. prod, through the Ansible playbook playbooks/promote.yml, refuses without approval, then takes it.
`--dry-run` only prints the plan.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import MESHCTL, Mesh, alive, free_port_base, stack_ports

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STACKS = ("dev", "staging", "prod")
FAST = {"steps": [50, 100], "hold": "1s", "requestRate": 40, "minSuccessRate": 0.95, "maxP99Ms": 3000,
        "minRequests": 3}


def write_stacks(root: Path) -> None:
    shutil.copytree(ROOT / "stacks", root / "stacks")
    ratings_50 = yaml.safe_load((ROOT / "stacks" / "releases" / "ratings-50" / "v1.yaml").read_text())
    bases: list[int] = []  # one block per stack: they run side by side during a promotion
    for name in STACKS:
        path = root / "stacks" / f"Pulumi.{name}.yaml"
        doc = yaml.safe_load(path.read_text())
        config = doc["config"]
        bases.append(free_port_base(skip=bases))
        config["weir:local"] = stack_ports(bases[-1])
        config["weir:promotion"] = {**FAST, "requireApproval": name == "prod"}
        config["weir:meshConfig"] = {"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}
        if name == "dev":
            config["weir:release"], config["weir:releaseDigest"] = ratings_50["release"], ratings_50["digest"]
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    (root / "stacks" / "promotions.log").unlink(missing_ok=True)


def ansible_promote(project: Project, *extra: str) -> subprocess.CompletedProcess:
    """playbooks/promote.yml against an inventory of the project's environments."""
    hosts = {}
    for name in STACKS:
        local = yaml.safe_load((project.root / "stacks" / f"Pulumi.{name}.yaml").read_text())["config"]["weir:local"]
        hosts[name] = {"weir_stack": name, "weir_ingress_url": f"http://127.0.0.1:{local['ingressPort']}",
                       "weir_control_plane_url": f"http://127.0.0.1:{local['controlPlanePort']}"}
    inventory = project.root / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"weir_local": {"vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "weir_platform": "local",
        "weir_root": str(project.root), "weir_home": str(project.root / "state"),
        "weir_meshctl": str(Path(sys.executable).parent / "meshctl")}, "hosts": hosts}}))
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                           str(ROOT / "playbooks" / "promote.yml"), *extra], cwd=ROOT,
                          env={**project.env, "ANSIBLE_NOCOLOR": "1"}, capture_output=True, text=True, timeout=300)


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
        self.env["WEIR_HOME"] = str(root / "state")

    def meshctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*MESHCTL, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=300)

    def pin(self, stack: str) -> str:
        return yaml.safe_load((self.root / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]["weir:release"]

    def log(self) -> list[dict]:
        path = self.root / "stacks" / "promotions.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    @contextlib.contextmanager
    def running(self, stack: str) -> Iterator[Mesh]:
        local = yaml.safe_load((self.root / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]["weir:local"]
        mesh = Mesh(self.root, self.env, f"http://127.0.0.1:{local['ingressPort']}",
                    f"http://127.0.0.1:{local['controlPlanePort']}", stack=stack)
        mesh.meshctl("up")
        started = mesh.pids()
        try:
            yield mesh
        finally:
            mesh.meshctl("down", check=False)
            assert [pid for pid in started if alive(pid)] == []


def config_of(mesh: Mesh) -> dict:
    with urllib.request.urlopen(mesh.control_plane + "/v1/config", timeout=5) as answer:
        return json.load(answer)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("weir-promotion")
    write_stacks(root)
    return Project(root)


def test_a_source_that_never_passed_smoke_is_refused(project: Project) -> None:
    before = (project.root / "stacks" / "Pulumi.staging.yaml").read_text()
    result = project.meshctl("promote", "--from", "dev", "--to", "staging")
    assert result.returncode == 1
    assert "dev has not passed smoke at ratings-50@v1: no smoke run recorded" in result.stderr
    assert (project.root / "stacks" / "Pulumi.staging.yaml").read_text() == before and project.log() == []


def test_dev_passes_smoke_at_its_pinned_release(project: Project) -> None:
    with project.running("dev") as dev:
        result = dev.meshctl("smoke", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    dry = project.meshctl("promote", "--from", "dev", "--to", "staging", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "promote ratings-50@v1" in dry.stdout and "step  50 %" in dry.stdout and "step 100 %" in dry.stdout


def test_a_failing_canary_is_rolled_back_leaving_staging_exactly_as_before(project: Project) -> None:
    stack_file = project.root / "stacks" / "Pulumi.staging.yaml"
    before_file = stack_file.read_text()
    with project.running("staging") as staging:
        before = config_of(staging)
        staging.meshctl("chaos", "ratings-v2", "--error-rate", "1.0")
        try:
            result = project.meshctl("promote", "--from", "dev", "--to", "staging")
        finally:
            staging.meshctl("chaos", "ratings-v2", "--reset")
        assert result.returncode == 1, result.stdout + result.stderr
        failed = result.stderr.split("step 50 % failed: ", 1)[1].split(";")[0].split(", ")
        assert "success-rate ratings-v2" in failed  # the canary's own gate (its callers pass its 500s on)
        assert "staging rolled back to all-v1@v1" in result.stderr
        assert config_of(staging) == before  # the same resources, labelled all-v1@v1 again
        staging.wait_synced()
        assert staging.books()["versions"]["ratings"] == "v1"
    assert stack_file.read_text() == before_file
    (entry,) = project.log()
    assert (entry["result"], entry["release"], entry["previous"]) == ("rolled-back", "ratings-50@v1", "all-v1@v1")
    assert entry["who"] and entry["at"] and entry["steps"][0]["passed"] is False


def test_a_healthy_canary_is_promoted_step_by_step_and_pinned(project: Project) -> None:
    with project.running("staging") as staging:
        result = project.meshctl("promote", "--from", "dev", "--to", "staging")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "promoted ratings-50@v1 to staging in 2 steps" in result.stdout
        assert config_of(staging)["label"]["release"] == "ratings-50@v1"
    assert project.pin("staging") == "ratings-50@v1"
    entry = project.log()[-1]
    assert entry["result"] == "promoted" and [s["percent"] for s in entry["steps"]] == [50, 100]
    assert all(g["passed"] for s in entry["steps"] for g in s["gates"])
    smoke = json.loads((project.root / "state" / "staging" / "smoke.json").read_text())
    assert smoke["passed"] and smoke["release"] == "ratings-50@v1"


def test_prod_through_ansible_requires_approval_then_takes_the_release(project: Project) -> None:
    refused = ansible_promote(project, "-e", "weir_from=staging", "-e", "weir_to=prod")
    assert refused.returncode != 0
    assert "promotion-preconditions" in refused.stdout and "prod requires approval" in refused.stdout
    with project.running("prod") as prod:
        result = ansible_promote(project, "-e", "weir_from=staging", "-e", "weir_to=prod", "-e", "weir_approve=true")
        assert result.returncode == 0, result.stdout[-3000:]
        assert "promoted ratings-50@v1 to prod in 2 steps" in result.stdout
        assert prod.books()["versions"]["gw"] == "v1"
    assert project.pin("prod") == "ratings-50@v1"
    diff = project.meshctl("diff", "staging", "prod")
    assert "no difference" in diff.stdout
