"""The supervisor: the long-running process that runs a Plan and keeps it running.

`python -m mesh.local.supervisor --plan FILE` (meshctl up writes `plan.json` and starts this detached)
or `--stack S [--root DIR]` (builds the plan from the stack itself). It starts the plan's processes
stage by stage (control plane → sidecars, then each app once its sidecar is ready → ingress gateway),
each in its own process group with stdout/stderr appended to `logs/<log>`; polls readiness URLs;
restarts a crashed process with exponential backoff (mesh.local.supervised: the state of each process,
a `Child`, and that backoff), counting restarts; carries out `meshctl
restart|stop|start WORKLOAD` (mesh.local.lifecycle); and publishes `state.json` and `registry.json`
(atomically, only when they change; each registry.json write has the next `generation`). On
SIGTERM/SIGINT it stops the stages in reverse, apps before their sidecars: SIGTERM, up to 5 s, SIGKILL.

Each (re)start of a proxy (a spec with an `identity`) gets a fresh one-time bootstrap token for its
certificate: the record goes to `<state>/ca/tokens/` (mesh.control.tokens), the token to the process in
WEIR_BOOTSTRAP_TOKEN, never on its command line; the previous, unused one is revoked.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mesh.control import tokens
from mesh.local import client, errors, lifecycle, mailbox, process, registry, stack, statedir, supervised
from mesh.local import plan as plan_mod

TICK = 0.1  # seconds between checks for exits, due restarts and stage progress
READY_PROBE_INTERVAL = 2.0  # once everything is ready, readiness is re-checked this often
STAGE_WAIT = 20.0  # a stage that is not ready by then does not hold back the next one
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")  # the user's, never the mesh's

log = logging.getLogger("weir.supervisor")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Supervisor:
    def __init__(self, plan: plan_mod.Plan, grace: float = process.STOP_GRACE) -> None:
        self.plan = plan
        self.state = statedir.StateDir(Path(plan.state_dir))
        self.grace = grace
        self.children = [supervised.Child(spec) for spec in plan.processes]
        self.stages = sorted({spec.stage for spec in plan.processes})
        self.launched = 0  # stages started so far
        self.status = "running"
        self.started_at = _now()
        self._stop = False
        self._next_probe = 0.0  # monotonic time of the next readiness probe round
        self._published: tuple[Any, Any] = (None, None)
        self.generation = 0  # of the registry.json last written
        self._env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
        self._env["PYTHONUNBUFFERED"] = "1"  # logs show up as they are written
        self.operations = lifecycle.Operations(self, self.state)  # meshctl restart|stop|start

    def request_stop(self, signum: int = 0, frame: object = None) -> None:
        self._stop = True

    def run(self) -> int:
        """Run until asked to stop; the exit code of the supervisor process."""
        self.state.ensure()
        other = self.state.read_pid()
        if other not in (None, os.getpid()) and process.alive(other):
            log.error("another supervisor (pid %s) already runs stack %s", other, self.plan.stack)
            return 1
        self.state.write_pid(os.getpid())
        mailbox.clear(self.state)
        log.info("supervisor pid %s: stack %s, %d processes", os.getpid(), self.plan.stack, len(self.children))
        # a worker per probe, and one for a lifecycle operation's push check
        with ThreadPoolExecutor(max_workers=min(32, len(self.children)) + 1) as self._pool:
            try:
                self._publish()
                self._loop()
            finally:
                self._shutdown()
                self.state.remove_pid(only=os.getpid())
        return 0

    def _loop(self) -> None:
        stage_deadline = self._launch_next_stage()
        while not self._stop:
            now = time.monotonic()
            self._reap(now)
            self._restart_due(now)
            self._start_waiting()
            self.operations.take(self.children, self.launched < len(self.stages), now)
            if now >= self._next_probe:
                self._probe()
                # stopped on request (held, no process) is settled too
                all_ready = all(child.ready or (child.held and not child.proc) for child in self.children)
                # probe every tick until all are ready; a crash or spawn resets this
                self._next_probe = now + (READY_PROBE_INTERVAL if all_ready else 0.0)
            if self.launched < len(self.stages) and (self._stage_ready(self.launched - 1) or now >= stage_deadline):
                stage_deadline = self._launch_next_stage()
            self.operations.advance(time.monotonic())  # its steps are stamped: the time they completed
            self._publish()
            time.sleep(TICK)

    def _stage(self, index: int) -> list[supervised.Child]:
        return [child for child in self.children if child.spec.stage == self.stages[index]]

    def _stage_ready(self, index: int) -> bool:
        return all(child.ready for child in self._stage(index))

    def _launch_next_stage(self) -> float:
        for child in lifecycle.start_order(self._stage(self.launched), lifecycle.runs_after):
            if self._blocked(child):
                child.status = "waiting"  # started by _start_waiting once what it runs after is ready
            else:
                self._spawn(child)
        self.launched += 1
        return time.monotonic() + STAGE_WAIT

    def _blocked(self, child: supervised.Child) -> bool:
        return lifecycle.waiting_for(child.spec.after, {c.spec.name: c.ready for c in self.children})

    def _start_waiting(self) -> None:
        for child in self.children:
            if child.status == "waiting" and not child.held and not self._blocked(child):
                self._spawn(child)

    def _spawn(self, child: supervised.Child) -> None:
        spec = child.spec
        child.restart_at, child.ready = None, False  # exit_code stays: the last exit, for status
        self._next_probe = 0.0
        child.started, child.started_at = time.monotonic(), _now()
        try:
            env = {**self._env, **spec.env, **self._credentials(child)}
            with open(self.state.log(spec.log), "ab") as out:
                out.write(f"--- weir: {_now()} starting {spec.name}: {' '.join(spec.command)}\n".encode())
                out.flush()
                child.proc = subprocess.Popen(
                    spec.command, cwd=self.plan.cwd, env=env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
        except OSError as exc:
            log.error("%s: cannot start: %s", spec.name, exc)
            self._crashed(child, time.monotonic())
            return
        child.status = "starting"
        log.info("%s: started pid %s", spec.name, child.proc.pid)

    def _credentials(self, child: supervised.Child) -> dict[str, str]:
        """A new bootstrap token for a proxy's identity (its last one revoked); nothing for other processes."""
        identity = child.spec.identity
        self._revoke(child)
        if not identity:
            return {}
        child.token = tokens.mint(self.state.tokens_dir, identity["namespace"], identity["serviceAccount"],
                                  identity["proxyId"], now=time.time())
        return {tokens.TOKEN_ENV: child.token}

    def _revoke(self, child: supervised.Child) -> None:
        if child.token is not None:
            tokens.revoke(self.state.tokens_dir, child.token)  # a no-op once the control plane consumed it
            child.token = None

    def _reap(self, now: float) -> None:
        for child in self.children:
            if child.held or child.proc is None or child.proc.poll() is None:
                continue
            child.exit_code = child.proc.returncode
            # its group may hold children that still own its ports
            process.signal_group(child.proc.pid, signal.SIGKILL)
            child.proc = None
            self._crashed(child, now)

    def _crashed(self, child: supervised.Child, now: float) -> None:
        delay = child.schedule_restart(now)
        self._next_probe = 0.0
        log.warning("%s: exited (code %s); restart in %.1fs", child.spec.name, child.exit_code, delay)

    def _restart_due(self, now: float) -> None:
        for child in self.children:
            if child.restart_at is not None and now >= child.restart_at and not self._blocked(child):
                child.restarts += 1
                self._spawn(child)

    def _probe(self) -> None:
        running = [child for child in self.children if child.proc is not None]
        results = self._pool.map(lambda child: client.probe(child.spec.ready_url), running)
        for child, ready in zip(running, results, strict=True):
            if ready != child.ready:
                log.info("%s: %s", child.spec.name, "ready" if ready else "not ready")
            child.ready = ready
            if not child.held:  # a held one's status is its operation's to say
                child.status = "ready" if ready else "starting"

    # the host side of lifecycle.steps (with spawn, publish and crashed below)
    def stopped(self, child: supervised.Child) -> None:
        child.exit_code = process.exit_code(child.proc)
        child.proc, child.status, child.ready = None, "stopped", False
        self._revoke(child)

    def check_push(self, generation: int) -> Future[bool]:
        """lifecycle.push_acked on the pool: the operation polls the future on later ticks."""
        return self._pool.submit(lifecycle.push_acked, self.plan.urls.get("controlPlane", ""), generation)

    def _publish(self) -> int:
        """Rewrite state.json and registry.json when, and only when, their content changed; the registry
        generation now on disk."""
        state = {
            "stack": self.plan.stack,
            "supervisor": {"pid": os.getpid(), "started_at": self.started_at, "status": self.status},
            "urls": dict(self.plan.urls),
            "processes": {child.spec.name: child.row(self.state.logs) for child in self.children},
        }
        ready = {child.spec.name: child.ready and not child.held for child in self.children}
        if state != self._published[0]:
            statedir.write_json(self.state.state_file, state)
        if ready != self._published[1]:
            self.generation += 1
            registry.write(self.state.registry_file, self.plan, ready, self.generation)
        self._published = (state, ready)
        return self.generation

    def _shutdown(self) -> None:
        """Stop the stages in reverse start order; each gets SIGTERM, the grace period, then SIGKILL."""
        log.info("stopping stack %s", self.plan.stack)
        self.status = "stopping"
        for index in reversed(range(len(self.stages))):
            children = self._stage(index)
            for child in children:
                child.ready, child.restart_at = False, None
                child.status = "stopping" if child.proc else "stopped"
            self._publish()
            for wave in lifecycle.stop_waves(children, lifecycle.runs_after):  # apps before their sidecars
                left = process.stop_groups([c.proc.pid for c in wave if c.proc], self.grace)
                if left:
                    log.error("still alive after SIGKILL: %s", sorted(left))
                for child in wave:
                    if child.proc is not None:
                        child.exit_code = process.exit_code(child.proc)
                    child.proc, child.status = None, "stopped"
                    self._revoke(child)
        self.status = "stopped"
        self._publish()
        log.info("stopped stack %s", self.plan.stack)

    spawn, publish, crashed = _spawn, _publish, _crashed  # for mesh.local.lifecycle's operations


def load_plan(args: argparse.Namespace) -> plan_mod.Plan:
    """The plan from `--plan FILE`, else built from the stack file and the bookinfo manifests."""
    if args.plan:
        return plan_mod.Plan.from_json(statedir.read_json(Path(args.plan)))
    from mesh.manifests import bookinfo  # only needed when no plan is given

    settings = stack.load(args.stack, Path(args.root) if args.root else None)
    return plan_mod.build(settings, bookinfo.deployments(), bookinfo.services())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.local.supervisor", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--root", help="project root (default: found from the current directory)")
    parser.add_argument("--plan", help="a plan.json to run instead of building one from the stack")
    parser.add_argument("--grace", type=float, default=process.STOP_GRACE, help="seconds from SIGTERM to SIGKILL")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    try:
        plan = load_plan(args)
    except errors.WeirError as exc:
        log.error("%s", exc)
        return 2
    busy = process.busy_ports(plan.ports())
    if busy:
        log.error("ports already in use: %s", ", ".join(busy))
        return 2
    supervisor = Supervisor(plan, grace=args.grace)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
