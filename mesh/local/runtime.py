"""Starting and stopping a stack's local environment: meshctl's `up` and `down`.

`up`: when a live supervisor already runs the stack, nothing is started (idempotent) but the workloads
`meshctl stop` left stopped (mesh.local.lifecycle); otherwise the plan's ports are checked free, the plan
is written to `plan.json` and mesh.local.supervisor is spawned detached with it. Then `up` waits (bounded) until every process is ready and makes the stack's pinned
routing release (or its scenario) the control plane's whole config, so every `up` converges the routing to
the stack file: what an earlier `apply` added and the release does not hold is deleted.
`down`: SIGTERM to the supervisor (which stops its processes in reverse order), SIGKILL if it does not
exit in time, then any process still alive from `state.json` is stopped, and the pid file removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.local import environment, errors, mailbox, process, prometheus, statedir
from mesh.local import plan as plan_mod
from mesh.local.stack import StackSettings

UP_TIMEOUT = 60.0
# The supervisor stops in waves, each SIGTERM, up to STOP_GRACE, SIGKILL, up to KILL_WAIT: the gateway,
# the apps, their sidecars, the control plane (mesh.local.supervisor; lifecycle.stop_waves per stage).
STOP_WAVES = 4
DOWN_TIMEOUT = STOP_WAVES * (process.STOP_GRACE + process.KILL_WAIT) + 5.0  # + its own exit, with margin
POLL = 0.1
LOG_TAIL_LINES = 15

# Called while waiting: (ready count, total, names not ready yet).
Progress = Callable[[int, int, list[str]], None]

# Supervisors spawned by this process; kept so a long-lived caller (a test) can still reap them.
_spawned: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True, slots=True)
class UpResult:
    started: bool  # False when a supervisor was already running
    pid: int
    state_dir: Path
    urls: dict[str, str]
    routing: dict[str, Any]  # the control plane's answer to applying the stack's scenario


SYNC_TIMEOUT = 10.0  # seconds `up` waits for every proxy to serve the applied routing


def up(settings: StackSettings, *, plan: plan_mod.Plan | None = None, timeout: float = UP_TIMEOUT,
       on_progress: Progress | None = None) -> UpResult:
    """Start the stack's environment unless it runs, wait until ready, apply the stack's routing.

    `plan` replaces the one built from the bookinfo manifests (tests run fake workloads this way).
    """
    state = statedir.StateDir(settings.state_dir)
    state.ensure()
    with _locked(state):
        pid = environment.supervisor_pid(state)
        started = pid is None
        if started:
            pid = _start(state, plan or _bookinfo_plan(settings))
        else:
            _start_stopped(state, pid)
    doc = _wait_ready(state, settings.name, pid, timeout, on_progress)
    prometheus.write(state)  # <state>/prometheus.yml: scrape targets of the plan that runs
    env = environment.Environment(stack=settings.name, state=state, pid=pid, doc=doc)
    routing = deploy(env, settings)
    # Return only once the proxies serve the routing: the ingress binds its listener when the Gateway
    # reaches it, a moment after the push (debounce + long poll). A slow sync is not an error of `up`.
    env.wait_synced(SYNC_TIMEOUT)
    return UpResult(started=started, pid=pid, state_dir=state.path, urls=env.urls(), routing=routing)


def deploy(env: environment.Environment, settings: StackSettings) -> dict[str, Any]:
    """Make the stack's routing (its pinned release, or its scenario) the control plane's whole config."""
    ref, digest = settings.pinned()
    return env.replace_config(_display(settings.routing_file, settings.root), settings.routing_resources(),
                              {"release": ref, "digest": digest})


def down(stack: str, state_dir: Path, timeout: float = DOWN_TIMEOUT) -> str:
    """Stop the stack's environment; a message saying what was done (nothing running is fine)."""
    state = statedir.StateDir(state_dir)
    pid = environment.supervisor_pid(state)
    if pid is not None:
        _signal(pid, signal.SIGTERM)
        if process.wait_gone([pid], timeout):
            _signal(pid, signal.SIGKILL)
            process.wait_gone([pid], 1.0)
    leftovers = _leftovers(state)
    if leftovers:
        process.stop_groups(leftovers)
    state.remove_pid()
    if pid is None and not leftovers:
        return f"no Weir environment is running for stack {stack}; nothing to stop"
    extra = f" (and {len(leftovers)} leftover processes)" if leftovers else ""
    return f"stopped stack {stack}{extra}"


def _start(state: statedir.StateDir, plan: plan_mod.Plan) -> int:
    leftovers = _leftovers(state)  # from a supervisor that was killed hard; they would hold the ports
    if leftovers:
        process.stop_groups(leftovers)
    busy = process.busy_ports(plan.ports())
    if busy:
        raise errors.StartupError(
            f"cannot start stack {plan.stack}: already in use: {', '.join(busy)}. Stop what listens there, "
            f"or give the stack other ports (weir:local in stacks/Pulumi.{plan.stack}.yaml)")
    state.state_file.unlink(missing_ok=True)  # never mistake the last run's state for this one's
    statedir.write_json(state.plan_file, plan.to_json())
    command = [sys.executable, "-m", environment.SUPERVISOR_MODULE, "--stack", plan.stack,
               "--plan", str(state.plan_file)]
    with open(state.supervisor_log, "ab") as out:
        proc = subprocess.Popen(command, cwd=plan.cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _spawned.append(proc)
    state.write_pid(proc.pid)
    return proc.pid


def _start_stopped(state: statedir.StateDir, pid: int) -> None:
    """`up` converges: workloads left stopped by `meshctl stop` are started again (mesh.local.lifecycle)."""
    doc = state.read_state() or {}
    if doc.get("supervisor", {}).get("status") != "running":
        return
    rows = doc.get("processes", {})
    for workload in sorted({row["workload"] for row in rows.values() if row["status"] == "stopped"}):
        result = mailbox.wait_result(state, mailbox.submit(state, "start", workload), lambda: process.alive(pid))
        if not result["ok"]:
            raise errors.StartupError(f"cannot start {workload}: {result['error']}")


def _bookinfo_plan(settings: StackSettings) -> plan_mod.Plan:
    try:
        from mesh.manifests import bookinfo
    except ImportError as exc:
        raise errors.StartupError(f"the bookinfo manifests (mesh.manifests.bookinfo) are not available: {exc}") from None
    return plan_mod.build(settings, bookinfo.deployments(), bookinfo.services())


def _wait_ready(state: statedir.StateDir, stack: str, pid: int, timeout: float,
                on_progress: Progress | None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = state.read_state()
        rows = doc["processes"] if doc and doc["supervisor"]["pid"] == pid else None
        if rows is not None:
            waiting = [name for name, row in rows.items() if not row["ready"]]
            if on_progress:
                on_progress(len(rows) - len(waiting), len(rows), waiting)
            if not waiting:
                return doc
        if not process.alive(pid) or (doc and doc["supervisor"]["status"] != "running" and rows is not None):
            log_end = environment.tail(state.supervisor_log, LOG_TAIL_LINES) if state.supervisor_log.is_file() else ""
            raise errors.StartupError(f"the supervisor of stack {stack} stopped during start-up; "
                                      f"{state.supervisor_log} ends with:\n{log_end.rstrip()}")
        if time.monotonic() >= deadline:
            raise errors.StartupError(_not_ready(stack, timeout, rows or {}))
        time.sleep(POLL)


def _not_ready(stack: str, timeout: float, rows: dict[str, dict[str, Any]]) -> str:
    option = "" if stack == "dev" else f" --stack {stack}"
    lines = [f"stack {stack} is not ready after {timeout:g} s:"]
    if not rows:
        lines.append("  the supervisor has not reported any process yet")
    for name, row in rows.items():
        if row["ready"]:
            continue
        detail = row["status"]
        if row["exit_code"] is not None:
            detail += f", last exit code {row['exit_code']}"
        if row["restarts"]:
            detail += f", {row['restarts']} restarts"
        lines.append(f"  {name} ({detail}, waiting for {row['ready_url']}): see {row['log']}")
    lines.append(f"It keeps running: inspect with `meshctl status{option}` and `meshctl logs{option} WORKLOAD`, "
                 f"stop with `meshctl down{option}`.")
    return "\n".join(lines)


def _leftovers(state: statedir.StateDir) -> list[int]:
    """Pids in state.json still running their planned command (the supervisor was killed hard)."""
    doc, plan_doc = state.read_state(), statedir.read_json(state.plan_file)
    if not doc or not plan_doc:
        return []
    commands = {spec["name"]: spec["command"] for spec in plan_doc["processes"]}
    return [row["pid"] for name, row in doc["processes"].items()
            if row["pid"] and name in commands and process.runs(row["pid"], commands[name])]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def _locked(state: statedir.StateDir) -> Iterator[None]:
    """Serialise concurrent `up`s of one stack: only one may spawn a supervisor."""
    with open(state.path / "up.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
