"""A running local environment, as meshctl sees it: found through the supervisor's pid file and
`state.json`, then reached over HTTP (control plane API, proxy admin API, app chaos port).

`attach` raises NotRunning when no live supervisor runs the stack (a stale pid file is removed).
Every remote operation of meshctl is a method here; mesh.cli only presents the results.
Starting and stopping live in mesh.local.runtime.
"""

from __future__ import annotations

import collections
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.local import client, errors, process, statedir
from mesh.local import plan as plan_mod
from mesh.manifests import releases

SUPERVISOR_MODULE = "mesh.local.supervisor"
GATEWAY_ALIASES = (plan_mod.GATEWAY_NAME, plan_mod.GATEWAY_WORKLOAD,
                   f"{plan_mod.GATEWAY_WORKLOAD}.{plan_mod.GATEWAY_NAMESPACE}")
CONTROL_NAME = "control"


def supervisor_pid(state: statedir.StateDir) -> int | None:
    """The pid of the live supervisor of this state dir; a stale pid file is removed on the way."""
    pid = state.read_pid()
    if pid is None:
        return None
    if process.alive(pid):
        argv = process.argv(pid)
        if argv is None or SUPERVISOR_MODULE in argv:
            return pid
    state.remove_pid(only=pid)  # the process is gone, or the pid now belongs to something else
    return None


def attach(stack: str, state_dir: Path) -> Environment:
    state = statedir.StateDir(state_dir)
    pid = supervisor_pid(state)
    doc = state.read_state() if pid else None
    if pid is None or doc is None:
        raise errors.NotRunning(stack)
    return Environment(stack=stack, state=state, pid=pid, doc=doc)


def log_file(state_dir: Path, workload: str, proxy: bool) -> Path:
    """The log of a workload's app (or sidecar with `proxy`); the gateway and `control` have one log."""
    state = statedir.StateDir(state_dir)
    if workload in GATEWAY_ALIASES:
        return state.log(plan_mod.proxy_log(plan_mod.GATEWAY_NAME))
    if workload in (CONTROL_NAME, "supervisor"):
        return state.log(plan_mod.app_log(workload))
    return state.log(plan_mod.proxy_log(workload) if proxy else plan_mod.app_log(workload))


def tail(path: Path, lines: int | None) -> str:
    if not path.is_file():
        raise errors.WeirError(f"no log at {path}")
    with path.open(errors="replace") as handle:
        kept = collections.deque(handle, maxlen=lines) if lines is not None else handle.readlines()
    return "".join(kept)


@dataclass(frozen=True, slots=True)
class Environment:
    stack: str
    state: statedir.StateDir
    pid: int
    doc: dict[str, Any]  # state.json

    @property
    def processes(self) -> dict[str, dict[str, Any]]:
        return self.doc["processes"]

    @property
    def control_url(self) -> str:
        return self.doc["urls"]["controlPlane"]

    def urls(self) -> dict[str, str]:
        # an environment started before the dashboard existed: its debug list is the closest thing
        return {"dashboard": f"{self.control_url}/debug/list", **self.doc["urls"]}

    def workloads(self) -> list[str]:
        return [row["workload"] for row in self.processes.values() if row["role"] == plan_mod.ROLE_APP]

    def _process(self, name: str, workload: str) -> dict[str, Any]:
        if name not in self.processes:
            known = ", ".join([*self.workloads(), plan_mod.GATEWAY_NAME])
            raise errors.WeirError(f"unknown workload {workload!r} in stack {self.stack} (known: {known})")
        return self.processes[name]

    def proxy_admin_url(self, workload: str) -> str:
        name = plan_mod.GATEWAY_NAME if workload in GATEWAY_ALIASES else f"{workload}.proxy"
        return f"http://{plan_mod.LOOPBACK}:{self._process(name, workload)['ports']['admin']}"

    def chaos_url(self, workload: str) -> str:
        if workload in GATEWAY_ALIASES:
            raise errors.WeirError("the ingress gateway has no chaos switch; name an app workload")
        return f"http://{plan_mod.LOOPBACK}:{self._process(workload, workload)['ports']['chaos']}/chaos"

    # control plane API (docs/architecture.md)

    def push_config(self, files: Sequence[tuple[str, str]], delete: bool = False) -> dict[str, Any]:
        body = {"files": [{"name": name, "text": text} for name, text in files], "dryRun": False}
        return client.call("DELETE" if delete else "POST", f"{self.control_url}/v1/config", body).json()

    def replace_config(self, name: str, resources: Sequence[dict[str, Any]], label: dict[str, Any]) -> dict[str, Any]:
        """Make `resources` (custom resources as dicts) the whole config, in one change (what was there and is
        not among them is deleted), and label the set (the routing release it is)."""
        text = releases.dump_yaml(list(resources), documents=True)
        body = {"files": [{"name": name, "text": text}], "replace": True, "label": label, "dryRun": False}
        return client.call("POST", f"{self.control_url}/v1/config", body).json()

    def config_label(self) -> dict[str, Any] | None:
        """What the control plane's whole config set is (the release a replacing apply named), if known."""
        doc = client.call("GET", f"{self.control_url}/v1/config").json()
        return doc.get("label") if isinstance(doc, dict) else None

    def config(self, kind: str | None = None) -> list[dict[str, Any]]:
        query = f"?{urllib.parse.urlencode({'kind': kind})}" if kind else ""
        return _rows(client.call("GET", f"{self.control_url}/v1/config{query}").json(), "resources")

    def proxies(self) -> list[dict[str, Any]]:
        return _rows(client.call("GET", f"{self.control_url}/v1/proxies").json(), "proxies")

    def synced(self) -> bool:
        """No change waits in the control plane's debounce or push queue, and every proxy has answered the
        version it was last sent (ACKed, or NACKed: waiting longer would not change that)."""
        push = client.call("GET", f"{self.control_url}/debug/push_status").json()
        if push.get("pending") or push.get("queued"):
            return False
        rows = self.proxies()
        return bool(rows) and all(str(row.get("status", "")).upper() in ANSWERED for row in rows)

    def wait_synced(self, timeout: float, clock=time.monotonic, sleep=time.sleep) -> bool:
        """Poll `synced` until true or `timeout` seconds passed; whether it got there."""
        deadline = clock() + timeout
        while True:
            if self.synced():
                return True
            if clock() >= deadline:
                return False
            sleep(SYNC_POLL_S)

    def probe(self, probe: Any) -> Any:
        """Send one expectation probe (mesh.local.probes) through or to a workload's sidecar."""
        from mesh.local import probes  # loads mesh.api: only scenarios with probes need it

        ports = {row["workload"]: row["ports"] for row in self.processes.values()
                 if row["role"] == plan_mod.ROLE_SIDECAR}
        return probes.send(probe, ports)

    # proxy admin API and app chaos switch

    def config_dump(self, workload: str, resource: str | None = None) -> Any:
        query = f"?{urllib.parse.urlencode({'resource': resource})}" if resource else ""
        return client.call("GET", f"{self.proxy_admin_url(workload)}/config_dump{query}").json()

    def stats(self, workload: str) -> str:
        return client.call("GET", f"{self.proxy_admin_url(workload)}/stats/prometheus").text()

    def chaos(self, workload: str, change: dict[str, Any] | None = None, reset: bool = False) -> Any:
        url = self.chaos_url(workload)
        if reset:
            return client.call("DELETE", url).json()
        return client.call("PUT", url, change).json() if change else client.call("GET", url).json()

    def status(self) -> dict[str, Any]:
        """state.json with live readiness probes and the control plane's proxy-status rows."""
        names = list(self.processes)
        with ThreadPoolExecutor(max_workers=min(32, len(names) or 1)) as pool:
            live = dict(zip(names, pool.map(lambda n: client.probe(self.processes[n]["ready_url"]), names),
                            strict=True))
        try:
            proxies, control_error = self.proxies(), None
        except errors.WeirError as exc:
            proxies, control_error = [], str(exc)
        return {
            "stack": self.stack,
            "stateDir": str(self.state.path),
            "supervisor": self.doc["supervisor"],
            "urls": self.urls(),
            "processes": [{"name": n, **self.processes[n], "ready": live[n]} for n in names],
            "proxies": proxies,
            "config": {"synced": sum(1 for row in proxies if str(row.get("status", "")).upper() == "SYNCED"),
                       "stale": sum(1 for row in proxies if str(row.get("status", "")).upper() != "SYNCED")},
            "controlPlane": {"url": self.control_url, "reachable": control_error is None, "error": control_error},
        }


SYNC_POLL_S = 0.05  # how often `wait_synced` asks the control plane
ANSWERED = ("SYNCED", "NACKED")  # proxy-status values of a proxy that answered its last push


def _rows(doc: Any, key: str) -> list[dict[str, Any]]:
    """A list answer, bare or wrapped as {key: [...]}."""
    return doc.get(key, []) if isinstance(doc, dict) else list(doc or [])
