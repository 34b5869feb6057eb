"""Workload lifecycle in the local runtime: start and stop order inside a workload, and `meshctl
restart|stop|start WORKLOAD` carried out by the supervisor (mesh.local.supervisor runs the operations).

Order (Istio's holdApplicationUntilProxyStarts, Kubernetes native sidecars): a process whose spec names
another in `after` (an app: its sidecar) starts only once that one is ready, and stops before it: the app
gets SIGTERM and is waited for, then its sidecar drains (mesh.proxy.drain), so the app's last outbound
calls still have a proxy.

Requests reach the supervisor through mesh.local.mailbox; `Operations` runs each as an `Operation`, a
generator of steps advanced once per supervisor tick (the supervisor never blocks on one), and answers it.

A restart: the workload is held out of the registry (its endpoint leaves every view), the supervisor
waits until the control plane's push is acked (`SETTLE_MIN_S` at least, `SETTLE_MAX_S` at most), stops
app then sidecar, starts sidecar, waits until ready, starts app, waits until ready, and lets the workload
back into the registry.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mesh.local import client, errors, mailbox, process, statedir

ACTIONS = ("restart", "stop", "start")
# At least this long between leaving the registry and the first SIGTERM: the control plane polls
# registry.json every 0.2 s and debounces pushes up to 0.5 s; after it, push acks are what we wait for.
SETTLE_MIN_S = 1.0
# A proxy that never acks (crashed, stale) does not hold a restart longer than this.
SETTLE_MAX_S = 5.0
# A (re)started process that is not ready by then fails the operation (the supervisor takes over).
READY_TIMEOUT_S = 30.0
KILL_WAIT_S = 1.0  # after SIGKILL, how long a process gets to be gone

T = TypeVar("T")

log = logging.getLogger("weir.supervisor")


# -- start and stop order (pure) ---------------------------------------------------------------------------
def waiting_for(after: str, ready: dict[str, bool]) -> bool:
    """True while a process must not start yet: the process named in its `after` is not ready."""
    return bool(after) and not ready.get(after, False)


def stop_waves(items: Sequence[T], after: Callable[[T], str]) -> list[list[T]]:
    """`items` split into stop waves: dependents (a non-empty `after`) first, then the rest."""
    first = [item for item in items if after(item)]
    rest = [item for item in items if not after(item)]
    return [wave for wave in (first, rest) if wave]


def start_order(items: Sequence[T], after: Callable[[T], str]) -> list[T]:
    """Dependencies before their dependents."""
    return [item for item in items if not after(item)] + [item for item in items if after(item)]


# -- operations --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Operation:
    """One request being carried out: `steps` is a generator the supervisor advances once per tick."""

    request: mailbox.Request
    started: float
    steps: Iterator[str | None]
    children: list[Any] = field(default_factory=list)  # supervisor.Child of the workload
    log: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def advance(self, now: float) -> bool:
        """Run until the next wait; True when the operation is over (done or failed)."""
        try:
            step = next(self.steps)
        except StopIteration:
            return True
        except Exception as exc:  # noqa: BLE001 - a failed step ends the operation, never the supervisor
            self.error = str(exc) if isinstance(exc, errors.WeirError) else f"{type(exc).__name__}: {exc}"
            return True
        if step:
            self.log.append({"step": step, "at": round(now - self.started, 3)})
        return False

    def result(self, now: float) -> dict[str, Any]:
        return {"id": self.request.id, "action": self.request.action, "workload": self.request.workload,
                "ok": self.error is None, "error": self.error, "seconds": round(now - self.started, 3),
                "steps": self.log}


def refused(request: mailbox.Request, error: str) -> dict[str, Any]:
    return {"id": request.id, "action": request.action, "workload": request.workload, "ok": False,
            "error": error, "seconds": 0.0, "steps": []}


# -- the steps of an operation (the supervisor is the host: it spawns, reaps and publishes) -----------------
def _after(child: Any) -> str:
    return child.spec.after


def steps(host: Any, action: str, children: list[Any], clock: Callable[[], float] = time.monotonic,
          ) -> Iterator[str | None]:
    """The sequence of `action` on one workload's `children` (supervisor.Child); yields once per wait,
    with a line for the result's log when a step completes. Raises WeirError when a step fails."""
    for child in children:
        child.held = True
    if action in ("restart", "stop"):
        yield from _leave_registry(host, clock)
        for wave in stop_waves(children, _after):
            yield from _stop(host, wave, clock)
    if action in ("restart", "start"):
        for child in start_order(children, _after):
            yield from _start(host, child, clock)
        for child in children:
            child.held = False
        host.publish()
        yield "back in the registry"


def _leave_registry(host: Any, clock: Callable[[], float]) -> Iterator[str | None]:
    host.publish()  # held: not ready in registry.json, so the control plane removes the endpoint
    yield "left the registry"
    began = clock()
    while clock() - began < SETTLE_MAX_S:
        if clock() - began >= SETTLE_MIN_S and host.push_acked():
            yield "endpoint removal pushed and acked"
            return
        yield None
    yield f"push not acked after {SETTLE_MAX_S:g} s; stopping anyway"


def _stop(host: Any, wave: list[Any], clock: Callable[[], float]) -> Iterator[str | None]:
    running = [child for child in wave if child.proc is not None]
    for child in running:
        child.ready, child.status = False, "stopping"
        process.signal_group(child.proc.pid, signal.SIGTERM)
    deadline = clock() + host.grace
    while any(child.proc.poll() is None for child in running) and clock() < deadline:
        yield None
    for child in running:
        process.signal_group(child.proc.pid, signal.SIGKILL)  # late ones, and stragglers in its group
    deadline = clock() + KILL_WAIT_S
    while any(child.proc.poll() is None for child in running) and clock() < deadline:
        yield None
    codes = ", ".join(f"{child.spec.name} exit {child.proc.poll()}" for child in running)
    for child in running:
        host.stopped(child)
    if running:
        yield f"stopped {codes}"


def _start(host: Any, child: Any, clock: Callable[[], float]) -> Iterator[str | None]:
    if child.proc is not None and child.proc.poll() is None:
        return  # already running
    host.spawn(child)
    began = clock()
    while not child.ready:
        if child.proc is None or child.proc.poll() is not None:
            raise errors.WeirError(f"{child.spec.name} exited while starting; see its log ({child.spec.log})")
        if clock() - began > READY_TIMEOUT_S:
            raise errors.WeirError(f"{child.spec.name} not ready after {READY_TIMEOUT_S:g} s ({child.spec.ready_url})")
        yield None
    child.status = "ready"
    yield f"{child.spec.name} ready"


# -- the supervisor's side: requests in, operations advanced, answers out ---------------------------------
class Operations:
    """The operations running in one supervisor (`host`), one per workload at a time."""

    def __init__(self, host: Any, state: statedir.StateDir) -> None:
        self.host = host
        self.state = state
        self.running: dict[str, Operation] = {}

    def take(self, children: list[Any], starting: bool, now: float) -> None:
        """Start an operation for each request waiting in the mailbox, or refuse it."""
        for request in mailbox.take(self.state):
            workload = request.workload
            mine = [c for c in children if workload in (c.spec.workload, c.spec.name)]
            error = (f"unknown action {request.action!r}" if request.action not in ACTIONS
                     else f"no workload {workload!r} in this stack" if not mine
                     else f"{workload}: a {self.running[workload].request.action} is already running"
                     if workload in self.running
                     else "the stack is still starting" if starting else None)
            if error:
                mailbox.answer(self.state, request.id, refused(request, error))
                continue
            log.info("%s %s (request %s)", request.action, workload, request.id)
            self.running[workload] = Operation(request, now, steps(self.host, request.action, mine), children=mine)

    def advance(self, now: float) -> None:
        for workload, operation in list(self.running.items()):
            if not operation.advance(now):
                continue
            del self.running[workload]
            if operation.error:
                log.error("%s %s failed: %s", operation.request.action, workload, operation.error)
                for child in operation.children:
                    if child.held:
                        child.held = False  # supervised again: a missing process is restarted
                        if child.proc is None:
                            self.host.crashed(child, now)
            mailbox.answer(self.state, operation.request.id, operation.result(time.monotonic()))


def push_acked(control_plane: str) -> bool:
    """The control plane has no push pending and every proxy acked what it was last sent."""
    try:
        push = client.request("GET", f"{control_plane}/debug/push_status", timeout=client.PROBE_TIMEOUT).json()
        rows = client.request("GET", f"{control_plane}/v1/proxies", timeout=client.PROBE_TIMEOUT).json()
    except (errors.Unreachable, ValueError):
        return False
    proxies = rows.get("proxies", []) if isinstance(rows, dict) else []
    return (isinstance(push, dict) and push.get("pending") == 0 and push.get("queued") == 0
            and all(row.get("status") == "SYNCED" for row in proxies))
