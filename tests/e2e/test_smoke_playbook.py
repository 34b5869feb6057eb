"""End to end: the real `ansible-playbook playbooks/smoke.yml` against the session's e2e mesh.

It passes on the healthy environment (its pinned release) and on releases whose expectations carry probes
(mTLS required, denials) and a statistical split; it fails, naming the check, when the environment is
broken on purpose (every ratings answer a 500; routing changed by hand so the pin is no longer in effect),
and records each result in the stack's smoke.json, which promotion reads.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mesh.manifests import releases

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "smoke.yml"
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = BIN / "ansible-playbook"

if not ANSIBLE_PLAYBOOK.exists():
    pytest.skip(f"ansible-playbook is not installed in {BIN} (pip install ansible-core)", allow_module_level=True)


@pytest.fixture(scope="module")
def inventory(mesh, tmp_path_factory) -> Path:
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "weir_platform": "local", "weir_stack": mesh.stack, "weir_root": str(mesh.root),
            "weir_home": str(mesh.root / "state"), "weir_meshctl": str(BIN / "meshctl"),
            "weir_ingress_url": mesh.ingress, "weir_control_plane_url": mesh.control_plane}
    path = tmp_path_factory.mktemp("inventory") / "e2e.yml"
    path.write_text(yaml.safe_dump({"weir_e2e": {"hosts": {mesh.stack: host}}}))
    return path


def smoke(mesh, inventory: Path) -> subprocess.CompletedProcess:
    env = {**mesh.env, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def recorded(mesh) -> dict:
    return json.loads((mesh.root / "state" / mesh.stack / "smoke.json").read_text())


def stack_file(mesh) -> Path:
    return mesh.root / "stacks" / f"Pulumi.{mesh.stack}.yaml"


@contextlib.contextmanager
def pinned(mesh, ref: str):
    """The environment runs release `ref` (the stack file pins it, `meshctl up` deploys it); restored after."""
    path = stack_file(mesh)
    original = path.read_text()
    path.write_text(releases.pin_text(original, releases.ReleaseStore(mesh.root).get(ref)))
    try:
        mesh.meshctl("up")
        yield
    finally:
        path.write_text(original)
        mesh.meshctl("up")


def test_passes_on_the_healthy_environment(mesh, inventory):
    mesh.meshctl("up")  # converge: earlier tests may have applied scenarios by hand
    result = smoke(mesh, inventory)
    assert result.returncode == 0, result.stdout[-3000:]
    doc = recorded(mesh)
    pin = yaml.safe_load(stack_file(mesh).read_text())["config"]
    assert doc["passed"] and doc["release"] == pin["weir:release"] and doc["digest"] == pin["weir:releaseDigest"]
    assert {"workloads-ready", "proxies-in-sync", "release-in-effect", "books-contract", "status"} <= {
        check["name"] for check in doc["checks"]}


@pytest.mark.parametrize(("ref", "roles"), [
    ("ratings-50@v1", ["split"]),
    ("mtls-strict@v1", ["mtls_required", "counters"]),
    ("authz-bookinfo@v1", ["denials", "counters"]),
])
def test_each_release_passes_with_its_scenario_checks(mesh, inventory, ref, roles):
    with pinned(mesh, ref):
        result = smoke(mesh, inventory)
    assert result.returncode == 0, result.stdout[-3000:]
    for role in roles:
        assert f"TASK [{role} : " in result.stdout, f"role {role} did not run:\n{result.stdout[-3000:]}"
    assert recorded(mesh)["release"] == ref and recorded(mesh)["passed"]


def test_fails_naming_the_check_when_ratings_always_fail(mesh, inventory):
    mesh.meshctl("up")
    try:
        for workload in ("ratings-v1", "ratings-v2"):
            mesh.meshctl("chaos", workload, "--error-rate", "1.0")
        result = smoke(mesh, inventory)
    finally:
        for workload in ("ratings-v1", "ratings-v2"):
            mesh.meshctl("chaos", workload, "--reset")
    assert result.returncode != 0
    assert "books-contract: expected GET /gateway/books 200" in result.stdout, result.stdout[-3000:]
    doc = recorded(mesh)
    assert not doc["passed"] and "books-contract" in [c["name"] for c in doc["checks"] if not c["passed"]]


def test_fails_naming_the_check_when_the_pin_is_not_in_effect(mesh, inventory):
    mesh.meshctl("up")
    try:
        mesh.apply("all-v1")  # by hand: the control plane no longer runs the pinned release as a whole
        mesh.wait_synced()
        result = smoke(mesh, inventory)
    finally:
        mesh.meshctl("up")
    assert result.returncode != 0
    assert "release-in-effect: expected round-robin@v1" in result.stdout, result.stdout[-3000:]
    assert not recorded(mesh)["passed"]
