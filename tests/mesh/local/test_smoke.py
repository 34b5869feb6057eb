"""mesh.local.smoke without sockets: the judges, the runner against a fake environment, a whole run of the
dev stack's pinned release against fakes, and the smoke.json record that promotion reads."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest

from mesh.local import errors, smoke
from mesh.local import stack as stack_mod
from mesh.local.expectations import Expectation
from mesh.local.judgement import Observations, Response
from mesh.manifests import releases

REPO = Path(__file__).resolve().parents[3]
BOOK = {"id": 1, "title": "T", "author": "A", "rating": {"stars": 4, "presentation": ":-)"}}


def _body(books=(BOOK,), versions=None) -> bytes:
    return json.dumps({"books": list(books), "versions": versions or {"gw": "v1", "books": "v1", "ratings": "v1"}}).encode()


# -- judges ------------------------------------------------------------------------------------------------


def test_books_contract_met() -> None:
    check = smoke.judge_books(200, _body())
    assert check.passed and check.name == "books-contract" and "1 books" in check.detail


@pytest.mark.parametrize(("status", "body", "seen"), [
    (500, b'{"error": "boom", "service": "ratings"}', "seen 500"),
    (0, "Connection refused", "seen no answer"),
    (200, b"<html>", "not JSON"),
    (200, json.dumps({"versions": {}}).encode(), "no `books` list"),
    (200, _body(books=[{**BOOK, "rating": {"stars": 4}}]), "book 1 without rating.presentation"),
    (200, _body(books=[{"id": 2, "rating": {"stars": 1, "presentation": "x"}}]), "book 2 without title, author"),
    (200, _body(versions={"gw": "v1", "books": "v2"}), "versions without ratings"),
])
def test_books_contract_broken(status, body, seen) -> None:
    check = smoke.judge_books(status, body)
    assert not check.passed
    assert check.detail.startswith("expected GET /gateway/books 200") and seen in check.detail, check.detail


def test_release_in_effect() -> None:
    digest, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert smoke.judge_release({"release": "all-v1@v1", "digest": digest}, "all-v1@v1", digest).passed
    moved = smoke.judge_release({"release": "ratings-50@v1", "digest": other}, "all-v1@v1", digest)
    assert not moved.passed and f"expected all-v1@v1 ({digest}), seen ratings-50@v1 ({other})" in moved.detail
    unlabelled = smoke.judge_release(None, "all-v1@v1", digest)
    assert not unlabelled.passed and "unlabelled" in unlabelled.detail


def test_readiness_and_sync() -> None:
    assert smoke.judge_ready([{"name": "control", "ready": True}]).passed
    down = smoke.judge_ready([{"name": "control", "ready": True}, {"name": "books-v1", "ready": False,
                                                                   "status": "restarting"}])
    assert not down.passed and "not ready: books-v1 (restarting)" in down.detail
    assert not smoke.judge_ready([]).passed
    assert smoke.judge_sync([{"proxy": "a", "status": "SYNCED"}]).passed
    stale = smoke.judge_sync([{"proxy": "a", "status": "SYNCED"}, {"proxy": "b", "status": "STALE"}])
    assert not stale.passed and "seen: b STALE" in stale.detail
    assert not smoke.judge_sync([]).passed


def test_the_contract_is_waived_only_for_a_release_expecting_no_200() -> None:
    def expectation(status, path="/gateway/books") -> Expectation:
        return Expectation.model_validate({"path": path, "requests": 1, "status": status})

    assert smoke.contract_waived(expectation({"504": [1.0, 1.0]}))
    assert not smoke.contract_waived(expectation({"200": [0.8, 1.0], "500": [0, 0.2]}))
    assert not smoke.contract_waived(expectation({"504": [1.0, 1.0]}, path="/"))
    assert not smoke.contract_waived(None)


# -- the runner against a fake environment --------------------------------------------------------------


@dataclasses.dataclass
class FakeEnv:
    """What smoke needs of mesh.local.environment.Environment, in memory."""

    label: dict | None = None
    processes: dict = dataclasses.field(default_factory=lambda: {
        "books-v1.proxy": {"name": "books-v1.proxy", "workload": "books-v1", "role": "sidecar",
                           "ports": {"inbound": 1, "outbound": 2, "admin": 3}, "ready": True}})
    calls: list = dataclasses.field(default_factory=list)
    scrapes: int = 0

    def urls(self) -> dict:
        return {"ingress": "http://ingress.test"}

    def status(self) -> dict:
        return {"processes": list(self.processes.values())}

    def proxies(self) -> list:
        return [{"proxy": "books-v1.bookinfo", "status": "SYNCED"}]

    def config_label(self) -> dict | None:
        return self.label

    def chaos(self, workload, change=None, reset=False):
        self.calls.append(("reset", workload) if reset else ("chaos", workload, change))

    def stats(self, workload: str) -> str:
        self.scrapes += 1
        grown = 0 if self.scrapes <= 2 else 5  # the copies arrive a moment after the requests (fire-and-forget)
        return f'weir_mirror_requests_total{{cluster="ratings"}} {grown}\n'


def test_exercise_sets_and_resets_chaos_and_rescrapes_until_the_stats_arrive(monkeypatch) -> None:
    expectation = Expectation.model_validate({
        "requests": 5, "concurrency": 2, "status": {"200": [1.0, 1.0]},
        "setup": [{"chaos": "books-v2", "delay": "0.2s"}],
        "counters": {"books-v1": {"weir_mirror_requests_total": ["requests", "requests"]}}})
    monkeypatch.setattr(smoke, "get", lambda url, headers=None, timeout=0: (200, _body()))
    env = FakeEnv()
    observed, failures = smoke.exercise(env, expectation, settle=5.0)
    assert failures == {"status": [], "counters": []}
    assert len(observed.responses) == 5 and env.scrapes >= 3
    assert env.calls == [("chaos", "books-v2", {"delay": 0.2}), ("reset", "books-v2")]


def test_rule_checks_and_probe_outcomes() -> None:
    expectation = Expectation.model_validate({
        "requests": 1, "status": {"200": [1.0, 1.0]},
        "probes": [{"direct": "books-v1", "path": "/books", "refused": True},
                   {"via": "ui-v1", "url": "http://books.bookinfo:9080/books", "status": 403}]})
    met = smoke.rule_check("status", [], expectation)
    assert met.passed and met.detail == 'met over 1 requests: {"200": [1.0, 1.0]}'
    assert smoke.rule_check("status", ["status 500: share 1.000 (1/1), expected none"], expectation) == smoke.Check(
        "status", False, "status 500: share 1.000 (1/1), expected none")
    results = [smoke.probes_mod.ProbeResult(200, "ok"), smoke.probes_mod.ProbeResult(403, "RBAC: access denied")]
    outcomes = smoke.probe_outcomes(expectation, Observations([Response(200, b"", 1.0)], probe_results=results))
    assert [(o["kind"], o["expected"], o["passed"]) for o in outcomes] == [
        ("mtls-required", "refused", False), ("denials", 403, True)]
    assert "expected the connection refused, got 200" in outcomes[0]["detail"]


# -- a whole run and its record ------------------------------------------------------------------------------


@pytest.fixture
def dev(tmp_path) -> stack_mod.StackSettings:
    return dataclasses.replace(stack_mod.load("dev", REPO), state_dir=tmp_path / "dev")


def _round_robin(monkeypatch) -> None:
    turn = itertools.count()

    def get(url, headers=None, timeout=0):
        n = next(turn)
        return 200, _body(versions={"gw": "v1", "books": f"v{n % 2 + 1}", "ratings": f"v{n // 2 % 2 + 1}"})

    monkeypatch.setattr(smoke, "get", get)


def test_run_checks_the_baseline_and_each_rule_of_the_pinned_release(monkeypatch, dev) -> None:
    ref, digest = dev.release.ref, dev.release.digest
    env = FakeEnv(label={"release": ref, "digest": digest})
    monkeypatch.setattr(smoke.environment, "attach", lambda stack, state_dir: env)
    _round_robin(monkeypatch)
    report = smoke.run(dev)
    assert [c.name for c in report.checks] == [
        "workloads-ready", "proxies-in-sync", "release-in-effect", "books-contract", "status", "split"]
    assert report.passed, report.checks
    assert (report.stack, report.release, report.digest) == ("dev", ref, digest)
    baseline = smoke.run(dev, scenario=False, release_check=False)
    assert [c.name for c in baseline.checks] == ["workloads-ready", "proxies-in-sync", "books-contract"]


def test_run_fails_when_another_release_is_in_effect(monkeypatch, dev) -> None:
    env = FakeEnv(label={"release": "all-v1@v1", "digest": "sha256:" + "0" * 64})
    monkeypatch.setattr(smoke.environment, "attach", lambda stack, state_dir: env)
    _round_robin(monkeypatch)
    report = smoke.run(dev, scenario=False)
    assert not report.passed and [c.name for c in report.checks if not c.passed] == ["release-in-effect"]


def test_an_unreleased_stack_must_run_its_scenario_content(tmp_path) -> None:
    scenario = REPO / "stacks" / "routing" / "all-v1.yaml"
    settings = stack_mod.StackSettings(name="s", root=REPO, state_dir=tmp_path, routing="all-v1",
                                       routing_file=scenario, ingress_port=1, control_plane_port=2, port_base=3)
    assert settings.pinned() == ("all-v1", releases.digest_of(settings.routing_resources()))
    assert smoke.expectation_of(settings).requests > 0


def test_not_running_is_an_error(dev) -> None:
    with pytest.raises(errors.NotRunning):
        smoke.run(dev)


def test_record_and_last_round_trip(dev) -> None:
    assert smoke.last(dev) is None
    report = smoke.SmokeReport("dev", "all-v1@v1", "sha256:" + "a" * 64,
                               (smoke.Check("books-contract", True, "ok"), smoke.Check("status", False, "no")))
    smoke.record(dev, report, at="2026-11-26T03:00:00Z")
    doc = smoke.last(dev)
    assert doc == {**report.as_dict(), "at": "2026-11-26T03:00:00Z"}
    assert doc["passed"] is False and doc["checks"][1] == {"name": "status", "passed": False, "detail": "no"}
    assert json.loads((dev.state_dir / "smoke.json").read_text()) == doc
    failed = smoke.failed(dev, "workloads-ready", "books-v1 not ready")
    assert (failed.release, failed.digest, failed.passed) == (dev.release.ref, dev.release.digest, False)
