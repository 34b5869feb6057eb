"""Smoke checks: is a local environment healthy, and does it deliver what its pinned routing release promises?

`run(settings)` attaches to the stack's running environment and returns a `SmokeReport` of named checks.
Baseline, always: `workloads-ready`, `proxies-in-sync`, `release-in-effect` (the control plane's config
label carries the stack's pinned digest) and `books-contract` (DESIGN.md's `GET /gateway/books`). With
`scenario=True`, one check per rule the release's `weir.dev/expect` annotation states
(mesh.local.judgement.RULES), judged on traffic that `exercise` sends: the one traffic runner, also
used by tests/e2e/test_scenarios.py and by the Ansible module playbooks/library/weir_smoke.py.
`record` keeps the last result in `<state_dir>/smoke.json`; promotion requires it passed at the source's
pinned digest. The `judge_*` functions are pure; `run`, `exercise` and `record` do the I/O.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mesh.api import ConfigError
from mesh.local import client, environment, errors, expectations, judgement, statedir
from mesh.local import probes as probes_mod
from mesh.local.expectations import Expectation
from mesh.local.judgement import Observations, Response
from mesh.local.stack import StackSettings

BOOKS_PATH = "/gateway/books"
SMOKE_FILE = "smoke.json"
CLIENT_TIMEOUT = 20.0  # seconds; far above any scenario's slowest answer (delay-5s: about 3 s)
STATS_SETTLE = 3.0  # seconds to re-scrape while a stats rule is unmet (mirrors are fire-and-forget)
SYNC_WAIT = 5.0  # seconds a just-pushed change may take to reach every proxy before it counts as stale
READY_WAIT = 2.0  # seconds a restarting process may take before it counts as not ready
POLL_S = 0.1
STATS_RULES = ("mirrored", "flags", "counters")
RULE_FIELDS = {"status": "status", "split": "split", "latency": "latencyMs", "mirrored": "mirrored",
               "flags": "flags", "counters": "counters", "probes": "probes"}


@dataclass(frozen=True, slots=True)
class Check:
    name: str  # workloads-ready, proxies-in-sync, release-in-effect, books-contract, or a rule name
    passed: bool
    detail: str  # what was expected and what was seen

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class SmokeReport:
    stack: str
    release: str  # the pinned ref (or the scenario of an unreleased stack)
    digest: str
    checks: tuple[Check, ...]
    probes: tuple[dict[str, Any], ...] = ()  # one per probe: kind mtls-required (refused) or denials

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"stack": self.stack, "release": self.release, "digest": self.digest, "passed": self.passed,
                "checks": [check.as_dict() for check in self.checks], "probes": list(self.probes)}


# -- judging (pure) ----------------------------------------------------------------------------------------


def judge_ready(processes: Sequence[Mapping[str, Any]]) -> Check:
    down = [f"{p['name']} ({p.get('status', '?')})" for p in processes if not p.get("ready")]
    if not processes:
        return Check("workloads-ready", False, "expected every process ready, seen no processes")
    if down:
        return Check("workloads-ready", False, f"expected all {len(processes)} processes ready, "
                                               f"not ready: {', '.join(down)}")
    return Check("workloads-ready", True, f"all {len(processes)} processes ready")


def judge_sync(proxies: Sequence[Mapping[str, Any]]) -> Check:
    stale = [f"{row.get('proxy')} {row.get('status')}" for row in proxies
             if str(row.get("status", "")).upper() != "SYNCED"]
    if not proxies:
        return Check("proxies-in-sync", False, "expected every proxy SYNCED, seen no proxies connected")
    if stale:
        return Check("proxies-in-sync", False, f"expected all {len(proxies)} proxies SYNCED, seen: {', '.join(stale)}")
    return Check("proxies-in-sync", True, f"all {len(proxies)} proxies SYNCED")


def judge_release(label: Mapping[str, Any] | None, ref: str, digest: str) -> Check:
    if not label:
        return Check("release-in-effect", False, f"expected the control plane to run {ref} ({digest}), "
                                                 f"seen an unlabelled config (applied by hand, not by `meshctl up`)")
    seen_ref, seen_digest = label.get("release"), label.get("digest")
    if seen_digest != digest:
        return Check("release-in-effect", False,
                     f"expected {ref} ({digest}), seen {seen_ref} ({seen_digest}): run `meshctl up` to deploy the pin")
    return Check("release-in-effect", True, f"{seen_ref} ({digest}) in effect")


def judge_books(status: int, body: bytes | str) -> Check:
    """DESIGN.md's contract: 200, `books` with id/title/author/rating.stars/rating.presentation each, and
    `versions` of gw, books and ratings."""
    def fail(seen: str) -> Check:
        return Check("books-contract", False, f"expected GET {BOOKS_PATH} 200 with books and versions, seen {seen}")

    if status != 200:
        return fail(f"{status or 'no answer'} {str(body)[:120]!r}")
    try:
        doc = json.loads(body)
    except (ValueError, TypeError):
        return fail(f"a body that is not JSON: {str(body)[:120]!r}")
    books = doc.get("books") if isinstance(doc, dict) else None
    if not isinstance(books, list) or not books:
        return fail("no `books` list")
    for book in books:
        rating = book.get("rating") if isinstance(book, dict) else None
        missing = [k for k in ("id", "title", "author") if not isinstance(book, dict) or k not in book]
        missing += [f"rating.{k}" for k in ("stars", "presentation") if not isinstance(rating, dict) or k not in rating]
        if missing:
            return fail(f"book {book.get('id') if isinstance(book, dict) else book!r} without {', '.join(missing)}")
    versions = doc.get("versions")
    absent = [k for k in ("gw", "books", "ratings") if not isinstance(versions, dict) or k not in versions]
    if absent:
        return fail(f"versions without {', '.join(absent)}")
    return Check("books-contract", True, f"200 with {len(books)} books, versions {json.dumps(versions)}")


def contract_waived(expectation: Expectation | None) -> bool:
    """A release whose expectation says `/gateway/books` never answers 200 (delay-5s: 504) cannot meet the
    books contract: its own status rule judges that answer instead."""
    if expectation is None or expectation.path != BOOKS_PATH or expectation.headers:
        return False
    band = expectation.status.get(200)
    return band is None or band[1] == 0.0


def rule_check(rule: str, failures: Sequence[str], expectation: Expectation) -> Check:
    if failures:
        return Check(rule, False, "; ".join(failures))
    stated = expectation.model_dump(mode="json", by_alias=True, exclude_none=True)[RULE_FIELDS[rule]]
    return Check(rule, True, f"met over {expectation.requests} requests: {json.dumps(stated)}")


def probe_outcomes(expectation: Expectation, observed: Observations) -> tuple[dict[str, Any], ...]:
    """Each probe on its own: `mtls-required` when it expects the connection refused, else `denials`."""
    out = []
    for probe, result in zip(expectation.probes, observed.probe_results, strict=False):
        failures = probes_mod.check([probe], [result])
        out.append({"probe": probe.describe(), "kind": "mtls-required" if probe.refused else "denials",
                    "expected": "refused" if probe.refused else probe.status, "passed": not failures,
                    "detail": failures[0] if failures else "met"})
    return tuple(out)


# -- traffic (the one runner) ------------------------------------------------------------------------------


def get(url: str, headers: Mapping[str, str] | None = None, timeout: float = CLIENT_TIMEOUT) -> tuple[int, bytes | str]:
    """One GET straight to the URL (never via http_proxy): (status, body); (NO_RESPONSE, error) without an answer."""
    try:
        answer = client.request("GET", url, timeout=timeout, headers=headers)
    except errors.Unreachable as exc:
        return expectations.NO_RESPONSE, str(exc)
    return answer.status, answer.body


def send(ingress: str, expectation: Expectation, timeout: float = CLIENT_TIMEOUT) -> list[Response]:
    """The expectation's requests through the ingress, `concurrency` at a time (threads)."""
    def one(_: int) -> Response:
        start = time.monotonic()
        status, body = get(ingress + expectation.path, expectation.headers, timeout)
        return Response(status, body, (time.monotonic() - start) * 1000)

    with ThreadPoolExecutor(expectation.concurrency) as pool:
        return list(pool.map(one, range(expectation.requests)))


def exercise(env: environment.Environment, expectation: Expectation, *, ingress: str | None = None,
             timeout: float = CLIENT_TIMEOUT, settle: float = STATS_SETTLE
             ) -> tuple[Observations, dict[str, list[str]]]:
    """Set the chaos switches, scrape, send, probe, scrape again (for up to `settle` s while a stats rule
    is unmet), reset the switches; the observations and `judgement.check_rules` of them."""
    ingress = ingress or env.urls()["ingress"]
    try:
        for step in expectation.setup:
            change = {"error_rate": step.error_rate, "delay": step.delay, "status": step.status}
            env.chaos(step.chaos, {k: v for k, v in change.items() if v is not None})
        before = {w: env.stats(w) for w in expectation.workloads}
        responses = send(ingress, expectation, timeout)
        probe_results = [env.probe(probe) for probe in expectation.probes]
        deadline = time.monotonic() + settle
        while True:
            observed = Observations(responses, before, {w: env.stats(w) for w in expectation.workloads},
                                    probe_results)
            failures = judgement.check_rules(expectation, observed)
            if not any(failures.get(rule) for rule in STATS_RULES) or time.monotonic() > deadline:
                return observed, failures
            time.sleep(POLL_S * 2)
    finally:
        for step in expectation.setup:
            env.chaos(step.chaos, reset=True)


# -- the smoke run -----------------------------------------------------------------------------------------


def expectation_of(settings: StackSettings) -> Expectation:
    """The pinned release's expectation (ExpectationError / ConfigError when it states none or a bad one)."""
    return expectations.from_resources(settings.routing_resources(), file=str(settings.routing_file))


def _until(judge: Callable[[], Check], wait: float) -> Check:
    deadline = time.monotonic() + wait
    while True:
        check = judge()
        if check.passed or time.monotonic() >= deadline:
            return check
        time.sleep(POLL_S)


def _books(env: environment.Environment, expectation: Expectation | None, ref: str) -> Check:
    if contract_waived(expectation):
        return Check("books-contract", True, f"not applicable: {ref} expects no 200 from {BOOKS_PATH} "
                                             f"(its status rule judges the answer)")
    return judge_books(*get(env.urls()["ingress"] + BOOKS_PATH))


def run(settings: StackSettings, *, scenario: bool = True, release_check: bool = True,
        env: Any = None) -> SmokeReport:
    """Smoke-check the stack's running environment (NotRunning when none runs); `env` another one with
    the same methods, such as a cluster's (mesh.local.cluster_env)."""
    env = env or environment.attach(settings.name, settings.state_dir)
    ref, digest = settings.pinned()
    try:
        expectation, problem = expectation_of(settings), ""
    except ConfigError as exc:
        expectation, problem = None, str(exc)
    checks = [_until(lambda: judge_ready(env.status()["processes"]), READY_WAIT),
              _until(lambda: judge_sync(env.proxies()), SYNC_WAIT)]
    if release_check:
        checks.append(judge_release(env.config_label(), ref, digest))
    checks.append(_books(env, expectation, ref))
    outcomes: tuple[dict[str, Any], ...] = ()
    if scenario and expectation is None:
        checks.append(Check("expectation", False, f"expected {ref} to state a weir.dev/expect annotation: {problem}"))
    elif scenario and expectation is not None:
        observed, failures = exercise(env, expectation)
        checks += [rule_check(rule, found, expectation) for rule, found in failures.items()]
        outcomes = probe_outcomes(expectation, observed)
    return SmokeReport(settings.name, ref, digest, tuple(checks), outcomes)


def failed(settings: StackSettings, check: str, detail: str) -> SmokeReport:
    """A failed run that found one failing check elsewhere (an Ansible role), to record."""
    ref, digest = settings.pinned()
    return SmokeReport(settings.name, ref, digest, (Check(check, False, detail),))


def record(settings: StackSettings, report: SmokeReport, *, at: str) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    statedir.write_json(settings.state_dir / SMOKE_FILE, {**report.as_dict(), "at": at})


def last(settings: StackSettings) -> dict[str, Any] | None:
    """The last recorded smoke result (release, digest, passed, checks, at), or None."""
    doc = statedir.read_json(settings.state_dir / SMOKE_FILE)
    return doc if isinstance(doc, dict) else None
