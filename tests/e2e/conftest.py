"""A real local mesh for end-to-end tests: `meshctl up` on its own stack, ports and state directory.

The environment is a copy of the project's stacks with an `e2e` stack on free ports, so the tests never
collide with a developer's running `dev` stack. Everything is started with the real `meshctl` and torn
down with `meshctl down`; the teardown asserts that no process is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MESHCTL = [sys.executable, "-m", "mesh.cli"]
# Straight to the ingress, whatever http_proxy the test process inherited.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# In a free_port_base block: the ingress, ingress TLS, control plane, its TLS and dashboard ports (the
# workloads take the block's first 10 per workload, 6 of them in bookinfo-lite).
STACK_PORTS_OFFSET = 90


def free_port_base(span: int = 100, skip: Collection[int] = ()) -> int:
    """A base for `span` consecutive free ports (the runtime lays workloads out from it). Bases below the
    kernel's ephemeral range (32768+) come first: there, client sockets' TIME_WAIT left by a test that
    opened thousands of connections cannot block a whole range (nor can a client take a port the mesh is
    about to bind). Probed with SO_REUSEADDR, as the mesh's servers bind: their own ports' old connections
    lingering in TIME_WAIT do not make them busy. 24000+ stays clear of the dev/staging/prod stacks.
    `skip`: bases already handed to stacks not started yet (nothing is bound there to tell)."""
    for base in (*range(24000, 32000, 1000), *range(32000, 60000, 1000)):
        if base in skip:
            continue
        taken = False
        for port in range(base, base + span):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    taken = True
                    break
        if not taken:
            return base
    raise RuntimeError("no free port range for the e2e stack")


@dataclass
class Mesh:
    root: Path
    env: dict[str, str]
    ingress: str
    control_plane: str
    stack: str = "e2e"
    started: list[int] = field(default_factory=list)

    def meshctl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([*MESHCTL, *args, "--stack", self.stack] if args[0] not in ("validate", "analyze")
                                else [*MESHCTL, *args], cwd=self.root, env=self.env, capture_output=True,
                                text=True, timeout=120, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"meshctl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def meshctl_json(self, *args: str):
        return json.loads(self.meshctl(*args, "-o", "json").stdout)

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
        request = urllib.request.Request(self.ingress + path, headers=headers or {})
        try:
            with DIRECT.open(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def sidecar_ports(self) -> dict[str, dict[str, int]]:
        """Each workload's sidecar ports ("inbound", "outbound", "admin"), from `meshctl status`."""
        processes = self.meshctl_json("status")["processes"]
        return {p["workload"]: p["ports"] for p in processes if p["role"] == "sidecar"}

    def books(self) -> dict:
        status, body = self.get("/gateway/books")
        assert status == 200, body
        return json.loads(body)

    def apply(self, scenario: str) -> subprocess.CompletedProcess:
        return self.meshctl("apply", "-f", str(self.root / "stacks" / "routing" / f"{scenario}.yaml"))

    def push_settled(self) -> bool:
        """No change waits in the control plane's debounce or push queue (views are rebuilt)."""
        with DIRECT.open(self.control_plane + "/debug/push_status", timeout=5) as response:
            push = json.load(response)
        return push["pending"] == 0 and push["queued"] == 0

    def wait_synced(self, timeout: float = 10.0) -> float:
        """Seconds until every proxy has ACKed the version the control plane last sent it. Views are
        rebuilt only after the push debounce: until then every proxy still looks SYNCED on the old one."""
        start = time.monotonic()
        rows = None
        while time.monotonic() - start < timeout:
            if not self.push_settled():
                time.sleep(0.02)
                continue
            rows = self.meshctl_json("proxy-status")
            if rows and all(row["status"] == "SYNCED" for row in rows):
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"proxies not synced after {timeout}s: {rows}")

    def pids(self) -> list[int]:
        status = self.meshctl_json("status")
        return [p["pid"] for p in status["processes"] if p.get("pid")] + [status["supervisor"]["pid"]]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def stack_ports(base: int) -> dict[str, int]:
    """A stack's `weir:local` config in one free_port_base block: workloads from its start (PORT_STRIDE per
    workload), the stack's own listeners from STACK_PORTS_OFFSET."""
    ingress, control = base + STACK_PORTS_OFFSET, base + STACK_PORTS_OFFSET + 2
    return {"ingressPort": ingress, "ingressTlsPort": ingress + 1, "controlPlanePort": control,
            "controlPlaneTlsPort": control + 1, "dashboardPort": control + 2, "portBase": base}


@contextlib.contextmanager
def running_mesh(root: Path, stack: str = "e2e", extra_config: dict | None = None) -> Iterator[Mesh]:
    """`meshctl up` on a copy of the project's stacks with a `stack` on free ports; `meshctl down` after,
    asserting that nothing is left running."""
    shutil.copytree(ROOT / "stacks", root / "stacks")
    base = free_port_base()  # every port in one block below the ephemeral range, clear of a churn's TIME_WAIT
    ingress, control = base + STACK_PORTS_OFFSET, base + STACK_PORTS_OFFSET + 2
    dev = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    dev["config"]["weir:local"] = stack_ports(base)
    if "weir:routing" in (extra_config or {}):  # a scenario instead of dev's pinned release
        del dev["config"]["weir:release"], dev["config"]["weir:releaseDigest"]
    dev["config"].update(extra_config or {})
    (root / "stacks" / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(dev))
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    env["WEIR_HOME"] = str(root / "state")
    mesh = Mesh(root, env, f"http://127.0.0.1:{ingress}", f"http://127.0.0.1:{control}", stack=stack)
    started = time.monotonic()
    mesh.meshctl("up")
    mesh.up_seconds = time.monotonic() - started
    mesh.first_status = mesh.get("/gateway/books")[0]  # `up` returns once the ingress serves the routing
    mesh.started = mesh.pids()
    try:
        yield mesh
    finally:
        result = mesh.meshctl("down", check=False)
        left = [pid for pid in mesh.started if alive(pid)]
        assert result.returncode == 0, result.stderr
        assert left == [], f"processes left after down: {left}"
