"""Workload lifecycle in the local runtime: start and stop order inside a workload, and `meshctl
restart|stop|start WORKLOAD` carried out by the supervisor (mesh.local.supervisor runs the operations).

Order (Istio's holdApplicationUntilProxyStarts, Kubernetes native sidecars): a process whose spec names
another in `after` (an app: its sidecar) starts only once that one is ready, and stops before it: the app
gets SIGTERM and is waited for, then its sidecar drains (mesh.proxy.drain), so the app's last outbound
calls still have a proxy.

Requests reach the supervisor through mesh.local.mailbox; `Operations` runs each as an `Operation`, a
generator of steps advanced once per supervisor tick, and answers it. The supervisor never blocks on one:
a step that waits yields, and the push check (two HTTP calls) runs on the supervisor's thread pool, its
future polled on later ticks. Nothing an operation or the mailbox raises reaches the supervisor's loop.
An operation holds its processes: another one that would touch any of them is refused until it ends.

A restart: the workload is held out of the registry (its endpoint leaves every view), the supervisor
waits until the control plane has read that registry generation and its push is acked (`SETTLE_MIN_S`
at least, `SETTLE_MAX_S` at most), stops app then sidecar, starts sidecar, waits until ready, starts app,
waits until ready, and lets the workload back into the registry. Each step in the result carries the
system-wide `time.monotonic()` it completed at, so a test can line it up with its own clock.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mesh.local import client, errors, mailbox, process, statedir

ACTIONS = ("restart", "stop", "start")
# At least this long between leaving the registry and the first SIGTERM, even once the control plane has
# read the registry and every proxy acked: margin for requests a client routed just before its view changed.
SETTLE_MIN_S = 1.0
# A proxy that never acks (crashed, stale) does not hold a restart longer than this.
SETTLE_MAX_S = 5.0
# A (re)started process that is not ready by then fails the operation (the supervisor takes over).
READY_TIMEOUT_S = 30.0

T = TypeVar("T")

log = logging.getLogger("weir.supervisor")


# -- start and stop order (pure) ---------------------------------------------------------------------------
def runs_after(child: Any) -> str:
    """What a supervised.Child starts after and stops before (its spec's `after`; "" for none)."""
    return child.spec.after


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
    children: list[Any] = field(default_factory=list)  # supervised.Child of the workload
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
        if step:  # `monotonic`: the system-wide clock, comparable with other processes' time.monotonic()
            self.log.append({"step": step, "at": round(now - self.started, 3), "monotonic": round(now, 3)})
        return False

    def result(self, now: float) -> dict[str, Any]:
        return {"id": self.request.id, "action": self.request.action, "workload": self.request.workload,
                "ok": self.error is None, "error": self.error, "seconds": round(now - self.started, 3),
                "steps": self.log}


def refused(request: mailbox.Request, error: str) -> dict[str, Any]:
    return {"id": request.id, "action": request.action, "workload": request.workload, "ok": False,
            "error": error, "seconds": 0.0, "steps": []}


# -- the steps of an operation ------------------------------------------------------------------------------
def steps(host: Any, action: str, children: list[Any], clock: Callable[[], float] = time.monotonic,
          ) -> Iterator[str | None]:
    """The sequence of `action` on one workload's `children` (supervised.Child); yields once per wait,
    with a line for the result's log when a step completes. Raises WeirError when a step fails.

    The host (the supervisor) has `grace`, `spawn(child)`, `stopped(child)`, `crashed(child, now)`,
    `publish()` → the registry generation on disk, and `check_push(generation)` → a Future of `push_acked`.
    """
    for child in children:
        child.held = True
    if action in ("restart", "stop"):
        yield from _leave_registry(host, clock)
        for wave in stop_waves(children, runs_after):
            yield from _stop(host, wave, clock)
    if action in ("restart", "start"):
        for child in start_order(children, runs_after):
            yield from _start(host, child, clock)
        for child in children:
            child.held = False
        host.publish()
        yield "back in the registry"


def _leave_registry(host: Any, clock: Callable[[], float]) -> Iterator[str | None]:
    generation = host.publish()  # held: not ready in registry.json, so the control plane removes the endpoint
    yield "left the registry"
    began, acked, check = clock(), False, None
    while clock() - began < SETTLE_MAX_S:
        if check is not None and check.done():
            acked, check = acked or _acked(check), None  # acked stays acked: the workload stays held
        if acked and clock() - began >= SETTLE_MIN_S:
            yield "endpoint removal pushed and acked"
            return
        if check is None and not acked:
            check = host.check_push(generation)  # on the supervisor's pool: this tick does not wait for it
        yield None
    yield f"push not acked after {SETTLE_MAX_S:g} s; stopping anyway"


def _acked(check: Future[bool]) -> bool:
    return not check.cancelled() and check.exception() is None and check.result() is True


def _stop(host: Any, wave: list[Any], clock: Callable[[], float]) -> Iterator[str | None]:
    running = [child for child in wave if child.proc is not None]
    for child in running:
        child.ready, child.status = False, "stopping"
        process.signal_group(child.proc.pid, signal.SIGTERM)
    deadline = clock() + host.grace
    while any(child.proc.poll() is None for child in running) and clock() < deadline:
        yield None
    for child in running:
        if child.proc.poll() is None:  # a late one, and its group; a reaped leader's pid may be reused
            process.signal_group(child.proc.pid, signal.SIGKILL)
    deadline = clock() + process.KILL_WAIT
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
    """The operations running in one supervisor (`host`), by request id; a process is in one at most."""

    def __init__(self, host: Any, state: statedir.StateDir) -> None:
        self.host = host
        self.state = state
        self.running: dict[str, Operation] = {}

    def take(self, children: list[Any], starting: bool, now: float) -> None:
        """Start an operation for each request waiting in the mailbox, or refuse it. Never raises."""
        try:
            requests = mailbox.take(self.state)
        except Exception:  # noqa: BLE001 - the mailbox must never stop the supervisor; next tick retries
            log.exception("cannot read the request mailbox")
            return
        for request in requests:
            try:
                self._start(request, children, starting, now)
            except Exception:  # noqa: BLE001 - e.g. the answer cannot be written: log, go on
                log.exception("request %s (%s %s) could not be handled", request.id, request.action,
                              request.workload)

    def _start(self, request: mailbox.Request, children: list[Any], starting: bool, now: float) -> None:
        mine = [c for c in children if request.workload in (c.spec.workload, c.spec.name)]
        error = self._refusal(request, mine, starting)
        if error:
            mailbox.answer(self.state, request.id, refused(request, error))
            return
        log.info("%s %s (request %s)", request.action, request.workload, request.id)
        self.running[request.id] = Operation(request, now, steps(self.host, request.action, mine), children=mine)

    def _refusal(self, request: mailbox.Request, mine: list[Any], starting: bool) -> str | None:
        if request.error:
            return request.error
        if request.action not in ACTIONS:
            return f"unknown action {request.action!r}"
        if not mine:
            return f"no workload {request.workload!r} in this stack"
        for other in self.running.values():
            busy = [c.spec.name for c in mine if any(c is held for held in other.children)]
            if busy:
                return (f"{request.workload}: {', '.join(busy)} is held by a running {other.request.action} "
                        f"{other.request.workload} (request {other.request.id}); try again once it is done")
        return "the stack is still starting" if starting else None

    def advance(self, now: float) -> None:
        """Advance every operation one step; answer and forget the ones that ended. Never raises."""
        for request_id, operation in list(self.running.items()):
            if not operation.advance(now):
                continue
            del self.running[request_id]
            try:
                self._release(operation, now)
            except Exception:  # noqa: BLE001 - never the supervisor's end; the answer still goes out
                log.exception("cleaning up after request %s failed", request_id)
            try:
                mailbox.answer(self.state, request_id, operation.result(now))
            except Exception:  # noqa: BLE001 - meshctl times out waiting; the supervisor goes on
                log.exception("cannot answer request %s", request_id)

    def _release(self, operation: Operation, now: float) -> None:
        """A failed operation hands its processes back: a missing one is restarted as after a crash."""
        if not operation.error:
            return
        log.error("%s %s failed: %s", operation.request.action, operation.request.workload, operation.error)
        for child in operation.children:
            if child.held:
                child.held = False
                if child.proc is None:
                    self.host.crashed(child, now)


def push_acked(control_plane: str, generation: int) -> bool:
    """The control plane's current snapshot was built from registry.json `generation` or later, no push
    is pending, and every proxy acked what it was last sent. Blocking (two HTTP calls, each up to
    client.PROBE_TIMEOUT): the supervisor runs it on its thread pool. Never raises; False when unsure.

    push_status is read first: proxies read after it have been sent that snapshot's views, so SYNCED rows
    mean acked views without the endpoint (the other order could see acks of the views before it)."""
    try:
        push = client.request("GET", f"{control_plane}/debug/push_status", timeout=client.PROBE_TIMEOUT).json()
        rows = client.request("GET", f"{control_plane}/v1/proxies", timeout=client.PROBE_TIMEOUT).json()
    except (errors.Unreachable, ValueError):
        return False
    if not isinstance(push, dict) or not isinstance(rows, dict):
        return False
    seen = push.get("registryGeneration")
    proxies = rows.get("proxies")
    return (isinstance(seen, int) and seen >= generation and push.get("pending") == 0 and push.get("queued") == 0
            and isinstance(proxies, list)
            and all(isinstance(row, dict) and row.get("status") == "SYNCED" for row in proxies))
