"""Workload lifecycle (mesh.local.lifecycle, mesh.local.mailbox): start/stop order inside a workload and
`meshctl restart|stop|start`. Pure decisions first; then the real supervisor running fake services that log
their start, SIGTERM and exit to one events file (fake_service.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mesh import cli
from mesh.local import errors, lifecycle, mailbox, runtime, statedir
from mesh.local.stack import StackSettings

from .conftest import fake_plan


def spec(name: str, after: str = "") -> SimpleNamespace:
    return SimpleNamespace(name=name, after=after)


def test_an_app_waits_for_the_process_it_starts_after():
    assert lifecycle.waiting_for("b.proxy", {"b.proxy": False})
    assert lifecycle.waiting_for("b.proxy", {})
    assert not lifecycle.waiting_for("b.proxy", {"b.proxy": True})
    assert not lifecycle.waiting_for("", {})


def test_dependents_stop_first_and_start_last():
    app, sidecar = spec("b", after="b.proxy"), spec("b.proxy")
    after = lambda s: s.after  # noqa: E731
    assert lifecycle.stop_waves([app, sidecar], after) == [[app], [sidecar]]
    assert lifecycle.stop_waves([sidecar], after) == [[sidecar]]
    assert lifecycle.start_order([app, sidecar], after) == [sidecar, app]


def test_an_operation_logs_its_steps_and_a_failed_step_ends_it():
    def steps():
        yield "one"
        yield None
        raise errors.WeirError("two broke")

    operation = lifecycle.Operation(mailbox.Request("r1", "restart", "b"), 10.0, steps())
    assert [operation.advance(t) for t in (10.5, 11.0, 11.5)] == [False, False, True]
    result = operation.result(12.0)
    assert result == {"id": "r1", "action": "restart", "workload": "b", "ok": False, "error": "two broke",
                      "seconds": 2.0, "steps": [{"step": "one", "at": 0.5}]}


class SettleHost:
    """The supervisor as `_leave_registry` sees it: publish, and whether the push is acked yet."""

    def __init__(self, acked: bool) -> None:
        self.acked, self.published = acked, 0

    def publish(self) -> None:
        self.published += 1

    def push_acked(self) -> bool:
        return self.acked


@pytest.mark.parametrize("acked, last, waited", [
    (True, "endpoint removal pushed and acked", lifecycle.SETTLE_MIN_S),
    (False, f"push not acked after {lifecycle.SETTLE_MAX_S:g} s; stopping anyway", lifecycle.SETTLE_MAX_S),
])
def test_leaving_the_registry_waits_for_the_ack_at_least_the_minimum_and_at_most_the_cap(acked, last, waited):
    now = [0.0]
    host = SettleHost(acked)
    lines = []
    for line in lifecycle._leave_registry(host, lambda: now[0]):
        if line:
            lines.append((line, now[0]))
        now[0] += 0.1  # one supervisor tick
    assert host.published == 1
    assert [text for text, _ in lines] == ["left the registry", last]
    assert waited <= lines[-1][1] - lines[0][1] <= waited + 0.25  # within a tick or two of the bound


def test_the_mailbox_carries_a_request_and_its_answer(tmp_path: Path):
    state = statedir.StateDir(tmp_path)
    request_id = mailbox.submit(state, "restart", "books-v1")
    (request,) = mailbox.take(state)
    assert request == mailbox.Request(request_id, "restart", "books-v1")
    assert mailbox.take(state) == [], "a request is taken once"
    threading.Timer(0.2, mailbox.answer, (state, request_id, {"ok": True})).start()
    assert mailbox.wait_result(state, request_id, lambda: True, timeout=5) == {"ok": True}
    assert list(mailbox.requests_dir(state).iterdir()) == []
    with pytest.raises(errors.WeirError, match="supervisor stopped"):
        mailbox.wait_result(state, "nope", lambda: False, timeout=5)


# -- with the real supervisor ------------------------------------------------------------------------------
pytestmark_e2e = pytest.mark.e2e


def events(path: Path) -> list[str]:
    return path.read_text().splitlines()


def workload_ready(settings: StackSettings) -> bool:
    doc = json.loads((settings.state_dir / "registry.json").read_text())
    return doc["workloads"][0]["ready"]


@pytest.fixture
def lifecycle_env(settings: StackSettings, tmp_path: Path):
    log = tmp_path / "events.log"
    plan = fake_plan(settings, events=log, proxy_ready_after=1.0, app_stop_delay=0.5)
    try:
        runtime.up(settings, plan=plan, timeout=30)
        yield log
    finally:
        runtime.down(settings.name, settings.state_dir)


@pytestmark_e2e
def test_the_app_starts_once_its_sidecar_is_ready_and_its_first_call_goes_through(lifecycle_env: Path):
    # the sidecar is ready only a second after it starts: an app started alongside would have been refused
    assert events(lifecycle_env) == ["start books-v1.proxy", "start books-v1", "call 200 books-v1"]


@pytestmark_e2e
def test_down_stops_the_app_and_waits_for_it_before_its_sidecar(settings: StackSettings, lifecycle_env: Path):
    runtime.down(settings.name, settings.state_dir)
    assert events(lifecycle_env)[3:] == ["sigterm books-v1", "exit books-v1",
                                         "sigterm books-v1.proxy", "exit books-v1.proxy"]


@pytestmark_e2e
def test_restart_leaves_the_registry_stops_app_then_sidecar_starts_sidecar_then_app(
        settings: StackSettings, lifecycle_env: Path):
    state = statedir.StateDir(settings.state_dir)
    before = {name: row["pid"] for name, row in state.read_state()["processes"].items()}
    seen_unready = threading.Event()

    def watch() -> None:
        while not seen_unready.is_set() and not done.is_set():
            if not workload_ready(settings):
                seen_unready.set()
            time.sleep(0.05)

    done = threading.Event()
    threading.Thread(target=watch, daemon=True).start()
    result = CliRunner().invoke(cli.main, ["restart", "books-v1", "--stack", settings.name, "-o", "json"],
                                env={"WEIR_HOME": str(settings.state_dir.parent)})
    done.set()
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ok"] and doc["workload"] == "books-v1"
    steps = [step["step"] for step in doc["steps"]]
    # the fake control plane reports every proxy synced: the settle ends on the ack (after SETTLE_MIN_S)
    assert steps == ["left the registry", "endpoint removal pushed and acked",
                     "stopped books-v1 exit 0", "stopped books-v1.proxy exit 0",
                     "books-v1.proxy ready", "books-v1 ready", "back in the registry"]
    assert events(lifecycle_env)[3:] == ["sigterm books-v1", "exit books-v1", "sigterm books-v1.proxy",
                                         "exit books-v1.proxy", "start books-v1.proxy", "start books-v1",
                                         "call 200 books-v1"]
    assert seen_unready.is_set(), "the workload left the registry during the restart"
    assert workload_ready(settings)
    rows = state.read_state()["processes"]
    for name in ("books-v1", "books-v1.proxy"):
        assert rows[name]["pid"] != before[name] and rows[name]["status"] == "ready"
        assert rows[name]["restarts"] == 0, "a requested restart is not a crash"
    assert rows["control"]["pid"] == before["control"]


@pytestmark_e2e
def test_stop_keeps_a_workload_stopped_until_started_and_up_starts_it(settings: StackSettings,
                                                                      lifecycle_env: Path):
    state = statedir.StateDir(settings.state_dir)
    request_id = mailbox.submit(state, "stop", "books-v1")
    assert mailbox.wait_result(state, request_id, lambda: True, timeout=30)["ok"]
    rows = state.read_state()["processes"]
    assert (rows["books-v1"]["status"], rows["books-v1.proxy"]["status"]) == ("stopped", "stopped")
    assert not workload_ready(settings)
    time.sleep(1.0)  # longer than the first crash backoff
    assert state.read_state()["processes"]["books-v1"]["pid"] is None, "not restarted as a crash"
    request_id = mailbox.submit(state, "start", "books-v1")
    result = mailbox.wait_result(state, request_id, lambda: True, timeout=30)
    assert [step["step"] for step in result["steps"]] == ["books-v1.proxy ready", "books-v1 ready",
                                                          "back in the registry"]
    assert workload_ready(settings)
    assert mailbox.wait_result(state, mailbox.submit(state, "stop", "books-v1"), lambda: True, timeout=30)["ok"]
    runtime.up(settings, timeout=30)  # idempotent, and converging: what `stop` left stopped runs again
    assert workload_ready(settings)
    assert {row["status"] for row in state.read_state()["processes"].values()} == {"ready"}


@pytestmark_e2e
def test_an_unknown_workload_is_refused_with_a_clear_error(settings: StackSettings, lifecycle_env: Path):
    result = CliRunner().invoke(cli.main, ["restart", "nope", "--stack", settings.name],
                                env={"WEIR_HOME": str(settings.state_dir.parent)})
    assert result.exit_code == 1
    assert "restart nope: no workload 'nope' in this stack" in result.output
