"""`meshctl promote --from A --to B`: move B to the release A runs, progressively, behind smoke and metric gates.

1. Preconditions (refused with nothing changed): A pins a release and its last smoke passed at exactly that
   release (`mesh.local.smoke.last`); B is running its own pinned release; B's policy may require `approve`.
2. For each step p of B's `weir:promotion.steps` (mesh.local.gates): the control plane of B gets the blend of
   its release and A's at p % (mesh.manifests.canary), labelled `NEW@p%`; once every proxy serves it, traffic
   is sent through B's ingress for `hold` at `requestRate`; B's sidecars are scraped before and after and the
   gates judged (success rate per workload and at the ingress, p99 at the ingress); then the baseline smoke
   checks run, and at 100 % the full smoke of the new release (its scenario's expectations).
3. A failed gate or check: B gets its previous release back, exactly (a replacing apply of the old release),
   the promotion log records the rollback and the command fails. Success: B's stack file pins the new
   release (only its two pin lines change), B's smoke record says it passed there, the log records it.

The promotion log, `stacks/promotions.log`, has one JSON object per line: who, what, when, the steps and
their gates, and the outcome. `dry_run` only returns the plan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.local import client, environment, errors, gates, smoke, top
from mesh.local import stack as stack_mod
from mesh.manifests import canary, releases

LOG = Path("stacks") / "promotions.log"
SYNC_TIMEOUT_S = 10.0
SENDERS = 4  # threads sending the hold traffic


class PromotionRefused(errors.WeirError):
    """A precondition does not hold: nothing was changed."""


class PromotionFailed(errors.WeirError):
    """A step failed its gates or checks: the target was rolled back to its previous release."""


@dataclass(frozen=True, slots=True)
class Plan:
    source: str
    target: str
    old: releases.Release
    new: releases.Release
    policy: gates.PromotionPolicy
    blends: tuple[canary.Blend, ...]

    def describe(self) -> list[str]:
        p = self.policy
        lines = [f"promote {self.new.ref} ({self.new.digest[:19]}) from {self.source} to {self.target}, "
                 f"replacing {self.old.ref}",
                 f"gates per step: hold {p.hold_s:g} s at {p.request_rate:g} req/s; success rate >= "
                 f"{p.min_success_rate:.2%} per workload (>= {p.min_requests} requests) and at the ingress; "
                 f"p99 at the ingress <= {p.max_p99_ms:g} ms; then the smoke checks (all of them at 100 %)"]
        old = self.old.keys()
        for blend in self.blends:
            lines.append(f"step {blend.percent:>3} %: {len(blend.resources)} resources")
            lines.extend(f"    {line}" for line in _routes_changed(old, blend))
            lines.extend(f"    note: {note}" for note in blend.notes)
        lines.append(f"on failure: {self.target} returns to {self.old.ref}; on success: {self.target} pins "
                     f"{self.new.ref}")
        return lines


@dataclass
class Outcome:
    plan: Plan
    result: str = ""  # "promoted" | "rolled-back" | "unchanged"
    steps: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""


def plan(source: stack_mod.StackSettings, target: stack_mod.StackSettings, *, approve: bool,
         gated: bool = True) -> Plan:
    """Check the preconditions that need no running environment and build the steps; with `gated` false the
    smoke and approval preconditions are not checked (a dry run shows the plan of a refused promotion too)."""
    if source.release is None:
        raise PromotionRefused(f"{source.name} runs the unreleased scenario {source.routing!r}: only a pinned "
                               f"release can be promoted (`meshctl release create {source.routing}`, then pin it)")
    if target.release is None:
        raise PromotionRefused(f"{target.name} pins no release (it runs the scenario {target.routing!r})")
    store = releases.ReleaseStore(target.root)
    try:
        new = store.resolve(source.release.ref, source.release.digest, where=str(source.source))
        old = store.resolve(target.release.ref, target.release.digest, where=str(target.source))
    except releases.ReleaseError as exc:
        raise PromotionRefused(str(exc)) from None
    record = smoke.last(source)
    if gated and (not record or not record.get("passed") or record.get("digest") != new.digest):
        seen = ("no smoke run recorded" if not record else
                f"last smoke {'passed' if record.get('passed') else 'FAILED'} at {record.get('release')} "
                f"({record.get('at', '?')})")
        raise PromotionRefused(f"{source.name} has not passed smoke at {new.ref}: {seen}; run "
                               f"`meshctl smoke --stack {source.name}` or playbooks/smoke.yml first")
    policy = target.promotion
    if gated and policy.require_approval and not approve:
        raise PromotionRefused(f"{target.name} requires approval (weir:promotion.requireApproval): add --approve")
    blends = tuple(canary.blend(old.resources, new.resources, p) for p in policy.steps)
    return Plan(source.name, target.name, old, new, policy, blends)


def promote(source: stack_mod.StackSettings, target: stack_mod.StackSettings, *, approve: bool = False,
            who: str, now: Callable[[], str], log: Callable[[str], None] = lambda line: None) -> Outcome:
    """Run the promotion (see the module docstring); PromotionRefused / PromotionFailed on the way out."""
    the_plan = plan(source, target, approve=approve)
    outcome = Outcome(the_plan)
    if the_plan.old.digest == the_plan.new.digest:
        outcome.result = "unchanged"
        return outcome
    env = environment.attach(target.name, target.state_dir)
    with _exclusive(target):
        label = env.config_label() or {}
        if label.get("digest") != the_plan.old.digest:
            raise PromotionRefused(f"{target.name} is not running its pinned release {the_plan.old.ref} (its "
                                   f"control plane runs {label.get('release', 'an unlabelled config')}): run "
                                   f"`meshctl up --stack {target.name}` first")
        try:
            for blend in the_plan.blends:
                step = _step(env, target, the_plan, blend, log)
                outcome.steps.append(step)
                if not step["passed"]:
                    failed = [g["name"] for g in step["gates"] + step["checks"] if not g["passed"]]
                    raise PromotionFailed(f"step {blend.percent} % failed: {', '.join(failed)}")
        except (errors.WeirError, KeyboardInterrupt) as exc:  # a failed step, a silent environment, Ctrl-C
            reason = str(exc) or "interrupted"
            log(f"rolling {target.name} back to {the_plan.old.ref}")
            _deploy(env, the_plan.old.resources, {"release": the_plan.old.ref, "digest": the_plan.old.digest},
                    the_plan.old.ref)
            outcome.result, outcome.reason = "rolled-back", reason
            _append_log(target.root, outcome, who, now())
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise PromotionFailed(f"{reason}; {target.name} rolled back to {the_plan.old.ref}") from None
        source_file = target.source or target.root / stack_mod.STACKS_DIR / f"Pulumi.{target.name}.yaml"
        source_file.write_text(releases.pin_text(source_file.read_text(), the_plan.new))
        outcome.result = "promoted"
        at = now()
        smoke.record(_pinned_to(target, the_plan.new), smoke_report(outcome), at=at)
        _append_log(target.root, outcome, who, at)
    return outcome


def _routes_changed(old: dict[str, dict], blend: canary.Blend) -> list[str]:
    """`VirtualService/bookinfo/ratings http[0]: ratings/v1 95%, ratings/v2 5%` for each route the step changes."""
    out = []
    for resource in blend.resources:
        key = releases.resource_key(resource)
        if resource.get("kind") != "VirtualService" or old.get(key, {}).get("spec") == resource.get("spec"):
            continue
        for index, rule in enumerate(resource.get("spec", {}).get("http") or []):
            shares = canary.route_shares(rule.get("route") or [])
            text = ", ".join(f"{d['destination'].get('host')}/{d['destination'].get('subset', '*')} {share:.0%}"
                             for d, share in shares)
            extras = [f"{name} {part['percentage']['value']:g}%" for name, part in (rule.get("fault") or {}).items()
                      if isinstance(part, dict) and "percentage" in part]
            if "mirror" in rule:
                extras.append(f"mirror {rule.get('mirrorPercentage', {}).get('value', 100):g}%")
            out.append(f"{key} http[{index}]: {text}" + (f"; {', '.join(extras)}" if extras else ""))
    return out


@contextlib.contextmanager
def _exclusive(target: stack_mod.StackSettings) -> Iterator[None]:
    """One promotion per target at a time: a second one is refused instead of interleaving its steps."""
    with open(target.state_dir / "promotion.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PromotionRefused(f"another promotion into {target.name} is running") from None
        yield


def smoke_report(outcome: Outcome) -> smoke.SmokeReport:
    return outcome.steps[-1]["report"]


def _step(env: environment.Environment, target: stack_mod.StackSettings, the_plan: Plan, blend: canary.Blend,
          log: Callable[[str], None]) -> dict[str, Any]:
    final = blend.percent == 100
    label = ({"release": the_plan.new.ref, "digest": the_plan.new.digest} if final else
             {"release": f"{the_plan.new.ref} at {blend.percent}%", "digest": releases.digest_of(blend.resources)})
    log(f"step {blend.percent} %: applying {label['release']}")
    _deploy(env, blend.resources, label, label["release"])
    workloads = top.targets(env)  # every app workload and the ingress
    before = _scrape(env, workloads)
    sent = _send(env.urls()["ingress"], target.promotion)
    verdicts = gates.evaluate(target.promotion, before, _scrape(env, workloads))
    report = smoke.run(_pinned_to(target, the_plan.new), scenario=final, release_check=final)
    passed = all(g.passed for g in verdicts) and report.passed
    log(f"step {blend.percent} %: {sent} requests, " + ("passed" if passed else "FAILED") + "; "
        + "; ".join(f"{g.name}: {g.detail}" for g in verdicts if not g.passed or final))
    return {"percent": blend.percent, "requests": sent, "passed": passed, "report": report,
            "gates": [g.as_dict() for g in verdicts],
            "checks": [c.as_dict() for c in report.checks]}


def _pinned_to(target: stack_mod.StackSettings, release: releases.Release) -> stack_mod.StackSettings:
    """The target's settings as they will be once it pins `release` (what smoke checks at 100 %)."""
    name, version = releases.parse_ref(release.ref)
    return dataclasses.replace(target, release=releases.Pin(release.ref, release.digest), routing=release.ref,
                               routing_file=releases.ReleaseStore(target.root).path(name, version))


def _deploy(env: environment.Environment, resources: tuple[dict, ...], label: dict[str, Any], name: str) -> None:
    env.replace_config(name, resources, label)
    if not env.wait_synced(SYNC_TIMEOUT_S):
        raise errors.WeirError(f"the proxies did not all serve {name} within {SYNC_TIMEOUT_S:g} s")


def _scrape(env: environment.Environment, workloads: list[str]) -> dict[str, str]:
    """Every proxy's stats (mesh.local.top's concurrent scrape); one that does not answer fails the step."""
    scraped = top.scrape(env, workloads)
    silent = sorted(w for w, text in scraped.items() if text is None)
    if silent:
        raise errors.WeirError(f"no stats from {', '.join(silent)}")
    return scraped


def _send(ingress: str, policy: gates.PromotionPolicy, clock=time.monotonic, sleep=time.sleep) -> int:
    """`requestRate` requests per second to /gateway/books for `hold`; how many were sent."""
    total = max(1, round(policy.request_rate * policy.hold_s))
    start = clock()

    def one(i: int) -> None:
        delay = start + i / policy.request_rate - clock()
        if delay > 0:
            sleep(delay)
        try:
            client.request("GET", f"{ingress}/gateway/books", timeout=smoke.CLIENT_TIMEOUT)
        except errors.Unreachable:
            pass  # counted by the sidecars (or not at all): the gates judge from their metrics

    with ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(one, range(total)))
    return total


def _append_log(root: Path, outcome: Outcome, who: str, at: str) -> None:
    p = outcome.plan
    entry = {"at": at, "who": who, "from": p.source, "to": p.target, "release": p.new.ref, "digest": p.new.digest,
             "previous": p.old.ref, "result": outcome.result, "reason": outcome.reason,
             "steps": [{k: v for k, v in s.items() if k != "report"} for s in outcome.steps]}
    with open(root / LOG, "a") as out:
        out.write(json.dumps(entry, sort_keys=False) + "\n")
