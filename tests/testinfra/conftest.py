"""testinfra's hosts and the environment they check: a running local mesh, or a cluster's meshed pods.

The local environment is the session mesh (tests/conftest.py `mesh`, shared with tests/e2e). The testinfra
items run after all others (`pytest_collection_modifyitems`), so they check a mesh the e2e tests have
exercised (restarts, rotations) rather than a fresh one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testinfra

from mesh.local import plan as plan_mod
from mesh.local import statedir
from tests.e2e import conftest as e2e

HERE = Path(__file__).resolve().parent
NAMESPACE = "bookinfo"
KUBECTL_TIMEOUT_S = 15  # a configured but unreachable cluster must not hold the run up


def pytest_collection_modifyitems(session, config, items) -> None:
    """Run this directory's tests last, so that the e2e session mesh, if any test started it, is there to
    check (and has been exercised: restarts, rotations) instead of a second mesh being started."""
    ours = [item for item in items if HERE in item.path.parents]
    if ours:
        items[:] = [item for item in items if HERE not in item.path.parents] + ours


@dataclass(frozen=True)
class LocalEnv:
    """A running local environment as its state directory describes it."""

    mesh: e2e.Mesh
    state: statedir.StateDir
    plan: plan_mod.Plan

    def status(self) -> dict[str, Any]:
        """state.json now (re-read: the supervisor rewrites it when a process restarts)."""
        return self.state.read_state()

    def pids(self) -> dict[str, int]:
        """Planned process name → pid."""
        return {name: row["pid"] for name, row in self.status()["processes"].items()}

    def gateway_listeners(self) -> set[int]:
        """The Gateway server ports in the ingress gateway's view (80, 443…): only those are bound."""
        listeners = json.loads(self.mesh.meshctl("proxy-config", plan_mod.GATEWAY_WORKLOAD, "listeners").stdout)
        return {listener["port"] for listener in listeners}


@pytest.fixture(scope="module")
def local_env(mesh: e2e.Mesh) -> LocalEnv:
    """The session's local environment (tests/conftest.py `mesh`), as its state directory describes it."""
    return _describe(mesh)


def _describe(mesh: e2e.Mesh) -> LocalEnv:
    state = statedir.StateDir(Path(mesh.env["WEIR_HOME"]) / mesh.stack)
    return LocalEnv(mesh, state, plan_mod.Plan.from_json(statedir.read_json(state.plan_file)))


@pytest.fixture(scope="session")
def local_host():
    """This machine (named apart from testinfra's `host` fixture, which `--hosts` points elsewhere)."""
    return testinfra.get_host("local://")


@pytest.fixture(scope="session")
def me(local_host) -> str:
    """The user running the tests, hence the mesh: the owner every state file must have."""
    return local_host.user().name


@pytest.fixture(scope="session")
def meshed_pods() -> dict[str, str]:
    """Workload (`app-version`) → the name of one running pod of it that carries the sidecar; skips the
    test when there is no kubectl, no cluster or no meshed pod in the bookinfo namespace."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    try:
        result = subprocess.run(["kubectl", "get", "pods", "-n", NAMESPACE, "-o", "json", "--request-timeout=10s"],
                                capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"no cluster: `kubectl get pods -n {NAMESPACE}` took over {KUBECTL_TIMEOUT_S}s")
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no cluster: `kubectl get pods -n {NAMESPACE}` failed: {reason}")
    pods = {}
    for pod in json.loads(result.stdout)["items"]:
        labels = pod["metadata"].get("labels") or {}
        containers = {c["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]}
        if pod["status"].get("phase") == "Running" and "weir-proxy" in containers:
            pods.setdefault(f"{labels.get('app')}-{labels.get('version')}", pod["metadata"]["name"])
    if not pods:
        pytest.skip(f"no running pod with a weir-proxy container in namespace {NAMESPACE}")
    return pods
