"""The supervisor and runtime with real processes: fake services (fake_service.py) in place of Weir's."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.control import tokens
from mesh.local import client, environment, errors, process, runtime, statedir
from mesh.local.stack import StackSettings

from .conftest import fake_plan, wait_for

pytestmark = pytest.mark.e2e


def state_of(settings: StackSettings) -> dict:
    return statedir.StateDir(settings.state_dir).read_state()


def pids_of(settings: StackSettings) -> dict[str, int]:
    return {name: row["pid"] for name, row in state_of(settings)["processes"].items()}


def test_up_starts_everything_and_reports_ready(settings: StackSettings, running: runtime.UpResult) -> None:
    assert running.started
    state = state_of(settings)
    assert state["supervisor"] == {"pid": running.pid, "started_at": state["supervisor"]["started_at"],
                                   "status": "running"}
    assert list(state["processes"]) == ["control", "books-v1", "books-v1.proxy", "ingress"]
    for name, row in state["processes"].items():
        assert (row["status"], row["ready"], row["restarts"]) == ("ready", True, 0), name
        assert process.alive(row["pid"])
        assert row["started_at"] and row["ports"]
        assert Path(row["log"]).is_file()
    registry = json.loads((settings.state_dir / "registry.json").read_text())
    assert [(w["name"], w["ready"]) for w in registry["workloads"]] == [("books-v1", True)]
    assert running.routing["applied"] == ["VirtualService/bookinfo/routing"]
    assert running.urls["ingress"] == f"http://127.0.0.1:{settings.ingress_port}"


def test_processes_get_the_planned_env_and_not_the_users_proxy(settings: StackSettings,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://corporate:3128")
    plan = fake_plan(settings)
    runtime.up(settings, plan=plan, timeout=30)
    try:
        app = plan.process("books-v1")
        env = client.call("GET", f"http://127.0.0.1:{app.ports['app']}/env").json()
        assert {k: env[k] for k in app.env} == dict(app.env)
        assert "http_proxy" not in env
        assert env["PYTHONUNBUFFERED"] == "1"
    finally:
        runtime.down(settings.name, settings.state_dir)


def test_each_proxy_start_gets_a_fresh_one_time_token_in_its_environment(settings: StackSettings,
                                                                        running: runtime.UpResult) -> None:
    state = statedir.StateDir(settings.state_dir)
    port = state_of(settings)["processes"]["books-v1.proxy"]["ports"]["admin"]

    def token_now() -> str:
        return client.call("GET", f"http://127.0.0.1:{port}/env").json()[tokens.TOKEN_ENV]

    first = token_now()
    record = state.tokens_dir / f"{tokens.digest(first)}.json"
    assert json.loads(record.read_text())["proxyId"] == "books-v1.bookinfo"
    assert oct(record.stat().st_mode & 0o777) == "0o600" and oct(state.ca_dir.stat().st_mode & 0o777) == "0o700"
    pid = pids_of(settings)["books-v1.proxy"]
    assert first not in Path(f"/proc/{pid}/cmdline").read_text()  # never on the command line
    assert first not in state.plan_file.read_text() and first not in state.state_file.read_text()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pids_of(settings)["books-v1.proxy"] not in (None, pid) and state_of(settings)["processes"][
        "books-v1.proxy"]["ready"], what="books-v1.proxy restarted")
    second = token_now()
    assert second != first and not record.exists()  # the unused token of the old run is revoked
    assert (state.tokens_dir / f"{tokens.digest(second)}.json").exists()
    assert "WEIR_BOOTSTRAP_TOKEN" not in client.call(
        "GET", f"http://127.0.0.1:{state_of(settings)['processes']['books-v1']['ports']['app']}/env").json()


def test_tokens_left_unused_are_revoked_at_down(settings: StackSettings) -> None:
    runtime.up(settings, plan=fake_plan(settings), timeout=30)
    tokens_dir = statedir.StateDir(settings.state_dir).tokens_dir
    assert len(list(tokens_dir.glob("*.json"))) == 2  # the sidecar's and the gateway's
    runtime.down(settings.name, settings.state_dir)
    assert list(tokens_dir.glob("*.json")) == []


def test_up_is_idempotent(settings: StackSettings, running: runtime.UpResult) -> None:
    pids = pids_of(settings)
    again = runtime.up(settings, plan=fake_plan(settings), timeout=10)
    assert (again.started, again.pid) == (False, running.pid)
    assert pids_of(settings) == pids


def test_crashed_process_is_restarted_and_counted(settings: StackSettings, running: runtime.UpResult) -> None:
    old = pids_of(settings)["books-v1"]
    os.kill(old, signal.SIGKILL)

    def restarted() -> dict | None:
        row = state_of(settings)["processes"]["books-v1"]
        return row if row["pid"] not in (None, old) and row["ready"] else None

    row = wait_for(restarted, what="books-v1 restarted and ready")
    assert row["restarts"] == 1
    assert row["exit_code"] == -signal.SIGKILL
    assert "starting books-v1" in (settings.state_dir / "logs" / "books-v1.log").read_text()


def test_down_leaves_no_process_behind(settings: StackSettings, tmp_path: Path) -> None:
    child_pid_file = tmp_path / "grandchild.pid"
    result = runtime.up(settings, plan=fake_plan(settings, child_pid_file=child_pid_file), timeout=30)
    pids = [result.pid, *pids_of(settings).values(), int(child_pid_file.read_text())]
    assert all(process.alive(pid) for pid in pids)

    assert runtime.down(settings.name, settings.state_dir) == f"stopped stack {settings.name}"

    assert [pid for pid in pids if process.alive(pid)] == []
    state = statedir.StateDir(settings.state_dir)
    assert not state.pid_file.exists()
    doc = state.read_state()
    assert doc["supervisor"]["status"] == "stopped"
    assert {row["status"] for row in doc["processes"].values()} == {"stopped"}
    assert not any(w["ready"] for w in json.loads(state.registry_file.read_text())["workloads"])


def test_down_when_nothing_runs(settings: StackSettings) -> None:
    message = runtime.down(settings.name, settings.state_dir)
    assert message == f"no Weir environment is running for stack {settings.name}; nothing to stop"


def test_down_after_supervisor_was_killed_stops_its_children(settings: StackSettings,
                                                             running: runtime.UpResult) -> None:
    children = list(pids_of(settings).values())
    os.kill(running.pid, signal.SIGKILL)
    process.wait_gone([running.pid], 5)
    assert all(process.alive(pid) for pid in children)
    assert "leftover" in runtime.down(settings.name, settings.state_dir)
    assert [pid for pid in children if process.alive(pid)] == []


def test_stale_pid_file_is_cleaned_up(settings: StackSettings) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = statedir.StateDir(settings.state_dir)
    state.ensure()
    state.write_pid(dead.pid)
    assert environment.supervisor_pid(state) is None
    assert not state.pid_file.exists()
    state.write_pid(dead.pid)
    try:
        assert runtime.up(settings, plan=fake_plan(settings), timeout=30).started
    finally:
        runtime.down(settings.name, settings.state_dir)


def test_pid_file_of_another_program_is_not_trusted(settings: StackSettings) -> None:
    state = statedir.StateDir(settings.state_dir)
    state.ensure()
    state.write_pid(os.getpid())  # alive, but not a supervisor
    assert environment.supervisor_pid(state) is None
    assert not state.pid_file.exists()


def test_taken_port_is_a_clear_error_before_anything_starts(settings: StackSettings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", settings.control_plane_port))
        sock.listen()
        with pytest.raises(errors.StartupError) as exc:
            runtime.up(settings, plan=fake_plan(settings), timeout=10)
    assert f"port {settings.control_plane_port} (control (http))" in str(exc.value)
    assert not statedir.StateDir(settings.state_dir).pid_file.exists()


def test_not_ready_names_the_process_and_its_log(settings: StackSettings) -> None:
    try:
        with pytest.raises(errors.StartupError) as exc:
            runtime.up(settings, plan=fake_plan(settings, never_ready="books-v1.proxy"), timeout=2)
        message = str(exc.value)
        assert "not ready after 2 s" in message
        assert "books-v1.proxy (starting" in message
        assert str(settings.state_dir / "logs" / "books-v1.proxy.log") in message
        assert "control (" not in message
    finally:
        runtime.down(settings.name, settings.state_dir)


def test_supervisor_refuses_a_second_instance(settings: StackSettings, running: runtime.UpResult) -> None:
    state = statedir.StateDir(settings.state_dir)
    proc = subprocess.run([sys.executable, "-m", "mesh.local.supervisor", "--plan", str(state.plan_file)],
                          cwd=settings.root, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert environment.supervisor_pid(state) == running.pid
