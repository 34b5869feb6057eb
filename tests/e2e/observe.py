"""What the fault tests observe besides the client's answers: a process of the mesh (from `meshctl status`),
its descriptors, sockets and memory (/proc), and a proxy's counters and pools (its admin `/stats/prometheus`,
`/config_dump`).
Figures go to stdout with `report` (`pytest -s` shows them) so a run records what it measured.
"""

from __future__ import annotations

import json
import os
import time

from bench import soak
from tests.e2e.conftest import DIRECT

RESTART_S = 20.0  # the supervisor's 0.5 s backoff plus a Python process start on a busy CI machine
# A normal request served while the proxy holds slow or hostile clients: milliseconds when it is not
# blocked, and still well under this on a loaded 2-core CI machine; a blocked one waits for a timeout.
SERVED_WITHIN_S = 5.0


def process(mesh, name: str) -> dict:
    (row,) = [p for p in mesh.meshctl_json("status")["processes"] if p["name"] == name]
    return row


def wait_restarted(mesh, name: str, old_pid: int, timeout: float = RESTART_S) -> dict:
    """The status row of `name` once the supervisor has restarted it (new pid) and it is ready."""
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        row = process(mesh, name)
        if row["pid"] not in (None, old_pid) and row["ready"]:
            return row
        time.sleep(0.1)
    raise AssertionError(f"{name} not restarted and ready after {timeout}s: {row}")


def admin_port(mesh, workload: str) -> int:
    """The workload's proxy admin port (`meshctl status`, a subprocess: look it up once where a loop samples)."""
    ports = {p["workload"]: p["ports"] for p in mesh.meshctl_json("status")["processes"] if "admin" in p["ports"]}
    return ports[workload]["admin"]


def _admin(port: int, path: str) -> bytes:
    with DIRECT.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read()


def scrape(mesh, workload: str) -> str:
    return _admin(admin_port(mesh, workload), "/stats/prometheus").decode()


def pools_to(admin: int, port: int) -> list[dict]:
    """The upstream pools to 127.0.0.1:`port` (one per cluster SNI under mTLS) of the proxy whose admin port is
    `admin`, from its config dump."""
    pools = json.loads(_admin(admin, "/config_dump"))["proxy"]["pools"]
    return [p for p in pools if p["endpoint"] == f"127.0.0.1:{port}"]


def metric(text: str, name: str, *labels: str) -> float:
    """Sum of the samples of `name` whose labels contain every one of `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in "{ " and all(label in line for label in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _process_figures(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open fds) as the soak reads them; a process that is gone is an error here."""
    figures = soak.read_process(pid)
    if figures is None:
        raise ProcessLookupError(f"process {pid} is gone")
    return figures


def rss(pid: int) -> int:
    return _process_figures(pid)[0] * 1024


def fds(pid: int) -> int:
    return _process_figures(pid)[1]


def sockets_to(pid: int, port: int) -> int:
    """TCP sockets of `pid` connected to 127.0.0.1:`port` (its own connections to that upstream)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        lines = table.readlines()[1:]
    for line in lines:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port and fields[9] in inodes:
            count += 1
    return count


def settle(pid: int, target: int, timeout: float = 10.0) -> int:
    """The descriptor count of `pid` once it is at most `target` (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while (count := fds(pid)) > target and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def report(label: str, **figures) -> None:
    print(f"\n[faults] {label}: " + " ".join(f"{k}={v}" for k, v in figures.items()))
