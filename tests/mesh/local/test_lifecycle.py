"""Workload lifecycle (mesh.local.lifecycle, mesh.local.mailbox): start/stop order inside a workload and
`meshctl restart|stop|start`. Pure decisions first; then the real supervisor running fake services that log
their start, SIGTERM and exit to one events file (fake_service.py)."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mesh import cli
from mesh.local import client, errors, lifecycle, mailbox, process, runtime, statedir
from mesh.local.stack import StackSettings

from .conftest import fake_plan, settings_for


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
                      "seconds": 2.0, "steps": [{"step": "one", "at": 0.5, "monotonic": 10.5}]}


class SettleHost:
    """The supervisor as `_leave_registry` sees it, with a control plane that reads registry.json
    generation `read_at[g]` seconds in (never when absent) and whose proxies ack every view (`acks`)."""

    def __init__(self, now: list[float], acks: bool = True, read_at: dict[int, float] | None = None) -> None:
        self.now, self.acks, self.read_at = now, acks, read_at if read_at is not None else {8: 0.0}
        self.generation, self.published, self.checks = 7, 0, []

    def publish(self) -> int:
        self.published += 1
        self.generation += 1
        return self.generation

    def check_push(self, generation: int) -> Future:
        seen = max((g for g, at in self.read_at.items() if at <= self.now[0]), default=7)
        self.checks.append(generation)
        future: Future = Future()
        future.set_result(self.acks and seen >= generation)  # an old generation is "acked" too: not enough
        return future


def settle(host: SettleHost) -> list[tuple[str, float]]:
    lines = []
    for line in lifecycle._leave_registry(host, lambda: host.now[0]):
        if line:
            lines.append((line, host.now[0]))
        host.now[0] += 0.1  # one supervisor tick
    return lines


@pytest.mark.parametrize("acks, last, waited", [
    (True, "endpoint removal pushed and acked", lifecycle.SETTLE_MIN_S),
    (False, f"push not acked after {lifecycle.SETTLE_MAX_S:g} s; stopping anyway", lifecycle.SETTLE_MAX_S),
])
def test_leaving_the_registry_waits_for_the_ack_at_least_the_minimum_and_at_most_the_cap(acks, last, waited):
    host = SettleHost([0.0], acks)
    lines = settle(host)
    assert host.published == 1
    assert [text for text, _ in lines] == ["left the registry", last]
    assert waited <= lines[-1][1] - lines[0][1] <= waited + 0.25  # within a tick or two of the bound
    assert set(host.checks) == {8}, "the generation it published"


def test_leaving_the_registry_waits_until_the_control_plane_has_read_that_generation():
    # acked pushes of views built before the control plane read registry.json say nothing about the endpoint
    host = SettleHost([0.0], read_at={8: 2.5})
    lines = settle(host)
    assert lines[-1][0] == "endpoint removal pushed and acked"
    assert 2.5 <= lines[-1][1] <= 2.5 + 0.25


def test_the_push_check_runs_off_the_tick_and_its_future_is_polled_on_later_ticks():
    now, futures = [0.0], []
    host = SimpleNamespace(publish=lambda: 3, check_push=lambda generation: futures.append(Future()) or futures[-1])
    settling = lifecycle._leave_registry(host, lambda: now[0])
    assert next(settling) == "left the registry"
    for _ in range(15):  # the check never answers in time: every tick yields at once, one check in flight
        assert next(settling) is None
        now[0] += 0.1
    assert len(futures) == 1
    futures[0].set_result(False)  # not acked yet: a new check
    assert next(settling) is None and len(futures) == 2
    futures[1].set_exception(RuntimeError("pool broke"))  # counts as not acked, never as the step failing
    now[0] += 0.1
    assert next(settling) is None and len(futures) == 3
    futures[2].set_result(True)
    assert next(settling) == "endpoint removal pushed and acked"


PUSH_OK = {"registryGeneration": 5, "pending": 0, "queued": 0}
SYNCED = {"proxies": [{"proxy": "a", "status": "SYNCED"}, {"proxy": "b", "status": "SYNCED"}]}


@pytest.mark.parametrize("push, proxies, acked", [
    (PUSH_OK, SYNCED, True),
    ({**PUSH_OK, "registryGeneration": 6}, SYNCED, True),
    ({**PUSH_OK, "registryGeneration": 4}, SYNCED, False),  # the control plane has not read it yet
    ({"pending": 0, "queued": 0}, SYNCED, False),  # a control plane that does not say
    ({**PUSH_OK, "pending": 1}, SYNCED, False),
    ({**PUSH_OK, "queued": 2}, SYNCED, False),
    (PUSH_OK, {"proxies": [{"proxy": "a", "status": "SYNCED"}, {"proxy": "b", "status": "STALE"}]}, False),
    (PUSH_OK, {"proxies": ["junk"]}, False),
    ([], SYNCED, False),
])
def test_push_acked_needs_the_published_generation_no_pending_push_and_every_proxy_synced(
        monkeypatch: pytest.MonkeyPatch, push, proxies, acked):
    answers = {"/debug/push_status": push, "/v1/proxies": proxies}
    asked = []

    def request(method: str, url: str, **_: object) -> client.Response:
        path = url.removeprefix("http://cp")
        asked.append(path)
        return client.Response(200, json.dumps(answers[path]).encode())

    monkeypatch.setattr(client, "request", request)
    assert lifecycle.push_acked("http://cp", 5) is acked
    assert asked == ["/debug/push_status", "/v1/proxies"], "push status first: proxies read after it"


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


def test_the_mailbox_skips_results_hidden_and_vanished_files_and_flags_what_is_not_a_request(tmp_path: Path):
    state = statedir.StateDir(tmp_path)
    directory = mailbox.requests_dir(state)
    directory.mkdir()
    statedir.write_json(directory / "done.result.json", {"ok": True})  # meshctl's to read
    (directory / ".half.json").write_text("{")  # hidden: someone's temporary file
    (directory / "gone.json").symlink_to(directory / "nowhere")  # deleted between listing and stat
    (directory / "list.json").write_text("[1, 2]")
    (directory / "broken.json").write_text("{not json")
    (directory / "partial.json").write_text('{"action": "restart"}')
    good = mailbox.submit(state, "stop", "books-v1")
    taken = {request.id: request for request in mailbox.take(state)}
    assert set(taken) == {good, "list", "broken", "partial"}
    assert taken[good] == mailbox.Request(good, "stop", "books-v1")
    for name in ("list", "broken", "partial"):
        assert taken[name].error.startswith(f"malformed request {name}: "), taken[name]
    assert "expected a JSON object" in taken["list"].error and "not JSON" in taken["broken"].error
    assert sorted(p.name for p in directory.iterdir()) == [".half.json", "done.result.json", "gone.json"]


# -- Operations: what the supervisor calls each tick ------------------------------------------------------
def child(name: str, workload: str = "books-v1", after: str = "") -> SimpleNamespace:
    return SimpleNamespace(spec=SimpleNamespace(name=name, workload=workload, after=after), held=False, proc=None)


WORKLOAD = [child("books-v1", after="books-v1.proxy"), child("books-v1.proxy")]


def answers(state: statedir.StateDir, *request_ids: str) -> list[dict]:
    return [mailbox.wait_result(state, request_id, lambda: True, timeout=1) for request_id in request_ids]


def test_an_operation_touching_a_process_held_by_a_running_one_is_refused(tmp_path: Path):
    state = statedir.StateDir(tmp_path)
    operations = lifecycle.Operations(SimpleNamespace(), state)
    first = mailbox.submit(state, "restart", "books-v1")
    operations.take(WORKLOAD, starting=False, now=1.0)
    second = mailbox.submit(state, "restart", "books-v1.proxy")
    third = mailbox.submit(state, "stop", "books-v1")
    operations.take(WORKLOAD, starting=False, now=2.0)
    assert list(operations.running) == [first]
    refusals = [doc["error"] for doc in answers(state, second, third)]
    assert refusals == [f"books-v1.proxy: books-v1.proxy is held by a running restart books-v1 (request {first}); "
                        "try again once it is done",
                        f"books-v1: books-v1, books-v1.proxy is held by a running restart books-v1 (request {first}); "
                        "try again once it is done"]


def test_a_malformed_request_is_answered_with_its_error(tmp_path: Path):
    state = statedir.StateDir(tmp_path)
    mailbox.requests_dir(state).mkdir()
    (mailbox.requests_dir(state) / "bad.json").write_text('"restart books-v1"')
    lifecycle.Operations(SimpleNamespace(), state).take(WORKLOAD, starting=False, now=0.0)
    (doc,) = answers(state, "bad")
    assert not doc["ok"] and doc["error"].startswith("malformed request bad: expected a JSON object")


def test_an_ended_operation_is_answered_on_the_supervisors_clock(tmp_path: Path):
    state = statedir.StateDir(tmp_path)
    mailbox.requests_dir(state).mkdir()
    operations = lifecycle.Operations(SimpleNamespace(), state)
    request = mailbox.Request("r1", "start", "books-v1")
    operations.running["r1"] = lifecycle.Operation(request, 100.0, iter(["books-v1 ready"]))
    operations.advance(100.25)
    operations.advance(101.5)
    (doc,) = answers(state, "r1")
    assert doc["seconds"] == 1.5 and doc["steps"] == [{"step": "books-v1 ready", "at": 0.25, "monotonic": 100.25}]
    assert operations.running == {}


def broken_steps():
    yield "one"
    raise KeyError("a bug")


@pytest.mark.parametrize("breaks", ["mailbox.take", "mailbox.answer", "host.crashed"])
def test_nothing_an_operation_or_the_mailbox_raises_reaches_the_supervisor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, breaks: str):
    def boom(*_: object) -> None:
        raise OSError(28, "No space left on device")

    state = statedir.StateDir(tmp_path)
    host = SimpleNamespace(crashed=boom if breaks == "host.crashed" else lambda child, now: None)
    operations = lifecycle.Operations(host, state)
    held = child("books-v1", after="books-v1.proxy")
    held.held = True
    request = mailbox.Request("r1", "restart", "books-v1")
    operations.running["r1"] = lifecycle.Operation(request, 0.0, broken_steps(), children=[held])
    mailbox.submit(state, "stop", "nope")
    if breaks.startswith("mailbox."):
        monkeypatch.setattr(mailbox, breaks.split(".")[1], boom)
    with caplog.at_level(logging.ERROR, "weir.supervisor"):
        for tick in range(3):
            operations.take(WORKLOAD, starting=False, now=float(tick))
            operations.advance(float(tick))
    assert operations.running == {} and not held.held, "the failed operation handed its process back"
    assert "No space left on device" in caplog.text
    if breaks == "host.crashed":
        assert answers(state, "r1")[0]["error"] == "KeyError: 'a bug'", "the answer still goes out"


class Proc:
    """A Popen that exits on SIGTERM only when `obeys`."""

    def __init__(self, pid: int, obeys: bool) -> None:
        self.pid, self.obeys, self.code = pid, obeys, None

    def poll(self) -> int | None:
        return self.code


def test_sigkill_goes_only_to_processes_still_running_after_the_grace(monkeypatch: pytest.MonkeyPatch):
    sent = []

    def signal_group(pid: int, sig: int) -> None:
        sent.append((pid, sig))
        proc = procs[pid]
        if sig == signal.SIGKILL or proc.obeys:
            proc.code = -sig if sig == signal.SIGKILL else 0

    monkeypatch.setattr(process, "signal_group", signal_group)
    procs = {101: Proc(101, obeys=True), 102: Proc(102, obeys=False)}
    wave = [child("a"), child("b")]
    wave[0].proc, wave[1].proc = procs[101], procs[102]
    now = [0.0]
    host = SimpleNamespace(grace=1.0, stopped=lambda c: setattr(c, "proc", None))
    lines = [line for line in lifecycle._stop(host, wave, lambda: now[0]) if not now.__setitem__(0, now[0] + 0.1)
             and line]
    assert sent == [(101, signal.SIGTERM), (102, signal.SIGTERM), (102, signal.SIGKILL)]
    assert lines == ["stopped a exit 0, b exit -9"]


def test_down_waits_for_every_stop_wave_of_the_supervisor(tmp_path: Path):
    plan = fake_plan(settings_for(tmp_path))
    stages = sorted({spec.stage for spec in plan.processes})
    waves = sum(len(lifecycle.stop_waves([s for s in plan.processes if s.stage == stage], lambda s: s.after))
                for stage in stages)
    assert waves == runtime.STOP_WAVES
    assert runtime.DOWN_TIMEOUT > waves * (process.STOP_GRACE + process.KILL_WAIT)


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
    # the fake control plane reads registry.json at once and reports every proxy synced: the settle ends on
    # the ack (after SETTLE_MIN_S)
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
