"""Child processes of a bench run: CPU pinning, start in an own process group, wait until serving, stop.

Every process is started with `start_new_session=True`, so that stopping it kills its whole group (nginx's
master and worker, a proxy and anything it forked). `Processes` collects them and stops all on exit,
whatever happened. The /proc readers give what the report needs: CPU seconds and peak RSS of one pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_S = 5.0  # SIGTERM → SIGKILL
START_TIMEOUT_S = 20.0
QUIET_BUSY = 0.10  # before a measurement, wait until at most this share of the CPUs is busy…
QUIET_WAIT_S = 30.0  # …but never longer than this


@dataclass(frozen=True)
class Pinning:
    """Which CPUs (taskset lists) the load side and the proxy side run on; None = not pinned."""

    load: str | None  # wrk, the open-loop client, the upstream
    proxy: str | None  # the proxy or proxies under test (Weir sidecars, nginx as a proxy)

    def prefix(self, cpus: str | None) -> list[str]:
        return ["taskset", "-c", cpus] if cpus is not None and shutil.which("taskset") else []

    def describe(self) -> str:
        if self.load is None:
            return "not pinned (fewer than 2 CPUs or no taskset)"
        return (f"CPU {self.load}: wrk, open-loop client, upstream nginx; "
                f"CPU {self.proxy}: proxy under test (each Weir sidecar, or nginx-as-proxy's one worker)")


def choose_pinning(ncpu: int | None = None) -> Pinning:
    ncpu = ncpu if ncpu is not None else os.cpu_count() or 1
    if ncpu < 2 or not shutil.which("taskset"):
        return Pinning(None, None)
    return Pinning("0", "1")


# Ports handed to the proxies and servers a run starts: below the kernel's ephemeral range. A port the kernel
# picks (bind to 0) is one it also gives to client sockets, and between `free_port` and the server's bind
# a connection of wrk or of another sidecar took it once ("Address already in use" in bench.interleaved).
PORTS_FROM = 12000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed: set[int] = set()  # never the same port twice in one run, bound yet or not


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback port nothing is bound to, below the ephemeral range, not handed out before by this process.
    Probed with SO_REUSEADDR, as asyncio's servers and nginx bind: a port's old connections in TIME_WAIT
    (a previous run's) do not make it busy."""
    for port in range(PORTS_FROM, max(PORTS_FROM, _ephemeral_low())):
        if port in _handed:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed.add(port)
        return port
    raise RuntimeError(f"no free port from {PORTS_FROM} up to the ephemeral range")


class Processes:
    """Starts children and stops every one of them on `close()` (use it as a context manager)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[subprocess.Popen] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, name: str, argv: list[str], *, cpus: list[str] | None = None,
              cwd: str | None = None) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the child
        try:
            proc = subprocess.Popen((cpus or []) + argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
        finally:
            log.close()
        proc.bench_name = name  # type: ignore[attr-defined]
        self.children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc in self.children:
            self.children.remove(proc)
        _stop_group(proc)

    def close(self) -> None:
        while self.children:
            _stop_group(self.children.pop())

    def log_tail(self, proc: subprocess.Popen, lines: int = 20) -> str:
        path = self.logdir / f"{getattr(proc, 'bench_name', 'unknown')}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group (e.g. nginx workers)
    except ProcessLookupError:
        pass


def wait_until(check, proc: subprocess.Popen, what: str, timeout: float = START_TIMEOUT_S) -> None:
    """Poll `check()` until it is true; fail early when the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: exited with {proc.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback only
        return response.status == 200


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of one process, its threads included, in seconds, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; state is fields[0]
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process."""
    return sum(cpu_times(pid))


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of one process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def busy_fraction(interval: float = 0.5) -> float:
    """Share of all CPUs busy over `interval` seconds, from /proc/stat (others' work is noise for us)."""
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait
    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(limit: float = QUIET_BUSY, max_wait: float = QUIET_WAIT_S) -> float:
    """Wait (bounded) until the machine is nearly idle before a measurement; return the last busy share."""
    deadline = time.monotonic() + max_wait
    busy = busy_fraction()
    while busy > limit and time.monotonic() < deadline:
        busy = busy_fraction()
    return busy


def children_pids(pid: int) -> list[int]:
    """Direct children of a pid (nginx's workers under its master)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
