"""Runs the Pulumi program under mocks once per variant, each in its own process (the resource graph is
global), all in parallel at session start; tests read the recorded graph through `Program`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver.py")
# variant -> (stack, overrides KEY=JSON)
VARIANTS = {
    "dev": ("dev", []),
    "staging": ("staging", []),
    "prod": ("prod", []),
    "dev-autopilot": ("dev", ["weir:autopilot=true"]),
    "dev-bad-mtls": ("dev", ['weir:mtlsMode="LOOSE"']),
}
K8S_BUILTIN_GROUPS = {"core", "apps", "rbac.authorization.k8s.io", "apiextensions.k8s.io", "policy",
                      "networking.k8s.io"}


class Program:
    """One mock run: its resources (by URN, type and name) and its stack outputs."""

    def __init__(self, variant: str, data: dict) -> None:
        self.variant = variant
        self.error = data["error"]
        self.resources = data["resources"]
        self.outputs = {k: v["value"] for k, v in data["outputs"].items()}
        self.secret_outputs = {k for k, v in data["outputs"].items() if v["secret"]}
        self.by_urn = {r["urn"]: r for r in self.resources}

    def of_type(self, typ: str) -> list[dict]:
        return [r for r in self.resources if r["type"] == typ]

    def one(self, typ: str, name: str | None = None) -> dict:
        found = [r for r in self.of_type(typ) if name is None or r["name"] == name]
        assert len(found) == 1, f"{self.variant}: expected one {typ} {name or ''}, found {[r['urn'] for r in found]}"
        return found[0]

    def kubernetes(self) -> list[dict]:
        return [r for r in self.resources if r["type"].startswith("kubernetes:")]


def _run(variant: str) -> Program:
    stack, overrides = VARIANTS[variant]
    proc = subprocess.run([sys.executable, str(DRIVER), stack, *overrides], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, f"driver {variant} failed:\n{proc.stderr[-3000:]}"
    return Program(variant, json.loads(proc.stdout))


@pytest.fixture(scope="session")
def programs() -> dict[str, Program]:
    for module in ("pulumi", "pulumi_gcp", "pulumi_kubernetes"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[infra]')")
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores
        return dict(zip(VARIANTS, pool.map(_run, VARIANTS)))
