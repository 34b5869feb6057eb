"""OS processes of the local runtime: liveness that sees through zombies, and stopping whole process
groups (SIGTERM, a grace period, then SIGKILL) so that nothing a process spawned outlives it.

Every process the supervisor starts leads its own process group (`start_new_session=True`), so its
pid is also its group id. Used by mesh.local.supervisor (its children) and mesh.local.runtime (the
supervisor, and any pid left behind in state.json).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
POLL = 0.05  # seconds between liveness checks while waiting
KILL_WAIT = 1.0  # seconds a group gets to be gone after SIGKILL


# Exit codes of children that `alive` reaped: Popen can no longer see them (its poll() would say 0).
_exit_codes: dict[int, int] = {}


def exit_code(proc) -> int | None:
    """A Popen's exit code, also when `alive` reaped it first (negative: killed by that signal)."""
    code = _exit_codes.pop(proc.pid, None)
    return code if code is not None else proc.poll()


def alive(pid: int) -> bool:
    """True while `pid` runs. Reaps it when it is our exited child; a zombie counts as gone."""
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped:
            _exit_codes[pid] = os.waitstatus_to_exitcode(status)
            return False
    except ChildProcessError:
        pass  # not our child: ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no procfs (macOS): kill(pid, 0) is all we know
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def argv(pid: int) -> list[str] | None:
    """The process's command line, or None when procfs cannot tell."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1]


def runs(pid: int, command: list[str] | tuple[str, ...]) -> bool:
    """True when `pid` is alive and still runs `command` (not a reused pid); without procfs, alive."""
    if not alive(pid):
        return False
    actual = argv(pid)
    return actual is None or actual == list(command)


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid`; a group already gone is fine."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        pass  # pid was reused by a process we do not own: not ours to stop


def wait_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """Wait until all `pids` have exited or `timeout` passed; the ones still alive."""
    left = set(pids)
    deadline = time.monotonic() + timeout
    while True:
        left = {pid for pid in left if alive(pid)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL)


def stop_groups(pids: Iterable[int], grace: float = STOP_GRACE) -> set[int]:
    """SIGTERM each group, wait up to `grace`, SIGKILL every group (its stragglers too); the pids that
    SIGKILL did not stop within KILL_WAIT (should be none)."""
    pids = list(pids)
    for pid in pids:
        signal_group(pid, signal.SIGTERM)
    wait_gone(pids, grace)
    for pid in pids:
        # the whole group: a leader that exited may leave children behind
        signal_group(pid, signal.SIGKILL)
    return wait_gone(pids, KILL_WAIT)


def busy_ports(ports: Iterable[tuple[int, str]], host: str = "127.0.0.1") -> list[str]:
    """"port P (owner)" for each (port, owner) that something already listens on.

    SO_REUSEADDR as the servers themselves set it: a port in TIME_WAIT after `down` is free, a
    listening one is not.
    """
    busy = []
    for port, owner in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                busy.append(f"port {port} ({owner})")
    return busy
