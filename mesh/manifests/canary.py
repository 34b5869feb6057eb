"""Progressive traffic shifting: the resources that route about p % of traffic the new release's way.

`meshctl promote` moves an environment from its release (old) to another (new) in steps, e.g. 10 → 50 → 100 %;
at each step the control plane gets `blend(old, new, p)`. Like Envoy's weighted clusters during a canary, only
what is a probability can be split: route weights, fault percentages and mirror percentages. Everything else
(timeouts, retries, rewrites, trafficPolicy, security policies…) switches to the new release at the first step
and is listed in `Blend.notes`.

Rules, per resource key `Kind/namespace/name`:
- p = 0 is exactly `old`, p = 100 exactly `new` (deep copies); a blend is always made of fresh dicts.
- Equal specs: the new resource. Only in new: included from the first step (noted unless a DestinationRule or
  VirtualService: a new subset or route set for an unrouted host is not a switch of existing traffic).
  Only in old: kept until 100 %, as old routes may still need it.
- DestinationRule: the new one, plus the old subsets whose names it lacks, so old routes keep resolving.
- VirtualService: http rules are paired by index when only `http` differs and every pair has the same `match`
  (else new's spec or http list, noted). In a pair of route rules, a share s_old of the old route and s_new of
  the new one become (1 - p)·s_old + p·s_new, in integer weights out of `WEIGHT_TOTAL`; fault and mirror
  percentages are interpolated the same way, a side without one counting as 0 (Weir: no percentage, no
  injection; a mirror without mirrorPercentage counts as 100).
- A blended resource drops the `weir.dev/expect` annotation: it promises the new release's traffic, not the
  blend's, and a smoke gate must not hold an intermediate step to it.

Worked example, all-v1 → ratings-50 at p = 10::

    old ratings http[0].route: [{ratings/v1}]                        → shares v1 1.0
    new ratings http[0].route: [{ratings/v1, 50}, {ratings/v2, 50}]  → shares v1 0.5, v2 0.5
    blend: v1 0.9·1.0 + 0.1·0.5 = 0.95, v2 0.1·0.5 = 0.05 → [{ratings/v1, 950}, {ratings/v2, 50}]

and mirroring (mirror ratings/v2, mirrorPercentage 100) at p = 50 from a rule without mirror gives
`mirrorPercentage: {value: 50.0}`; delay-2s (percentage 100) at p = 10 gives `percentage: {value: 10.0}`.

Pure: no I/O. Input resources are `mesh.api.dump` dicts (camelCase); the next stop is the control plane.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mesh.manifests.releases import Obj, resource_key

WEIGHT_TOTAL = 1000  # blended weights are per mille: 10 % of a 50/50 split stays exact (950/50)
EXPECT_ANNOTATION = "weir.dev/expect"
SPLITTABLE_KINDS = ("DestinationRule", "VirtualService")
# Rule fields blended by share; every other field of a rule is new's from the first step.
SPLIT_RULE_FIELDS = frozenset({"route", "fault", "mirror", "mirrorPercentage", "mirrorPercent"})
ROUTE_ACTIONS = ("route", "redirect", "directResponse", "delegate")


@dataclass(frozen=True, slots=True)
class Blend:
    percent: int
    resources: tuple[Obj, ...]  # fresh dicts, never the inputs
    notes: tuple[str, ...]  # what could not be split and switches to the new release at the first step


def blend(old: Sequence[Obj], new: Sequence[Obj], percent: int) -> Blend:
    """The resources that send `percent` % of traffic the way `new` does and the rest the way `old` does."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ValueError(f"percent must be an integer from 0 to 100, got {percent!r}")
    if percent in (0, 100):
        return Blend(percent, tuple(copy.deepcopy(list(old if percent == 0 else new))), ())
    olds = {resource_key(r): r for r in old}
    news = {resource_key(r): r for r in new}
    notes: list[str] = []
    out = []
    for key, n in news.items():
        o = olds.get(key)
        if o is None:
            if n.get("kind") not in SPLITTABLE_KINDS:
                notes.append(f"{key}: only in the new release, applies from the first step")
            out.append(copy.deepcopy(n))
        else:
            out.append(_blend_resource(key, o, n, percent / 100, notes))
    out += [copy.deepcopy(o) for key, o in olds.items() if key not in news]
    return Blend(percent, tuple(out), tuple(notes))


def _blend_resource(key: str, old: Obj, new: Obj, p: float, notes: list[str]) -> Obj:
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    if old_spec == new_spec:
        return copy.deepcopy(new)
    kind = new.get("kind")
    if kind == "DestinationRule":
        spec = _blend_destination_rule(key, old_spec, new_spec, notes)
    elif kind == "VirtualService":
        spec = _blend_virtual_service(key, old_spec, new_spec, p, notes)
    else:
        notes.append(f"{key}: the new release's spec from the first step")
        return copy.deepcopy(new)
    blended = copy.deepcopy(new)
    blended["spec"] = spec
    if spec != new_spec:
        _drop_expectation(blended)
    return blended


def _drop_expectation(resource: Obj) -> None:
    metadata = resource.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    annotations.pop(EXPECT_ANNOTATION, None)
    if not annotations:
        metadata.pop("annotations", None)


def _blend_destination_rule(key: str, old: Obj, new: Obj, notes: list[str]) -> Obj:
    spec = copy.deepcopy(new)
    new_subsets = {s["name"]: s for s in new.get("subsets") or []}
    kept = [copy.deepcopy(s) for s in old.get("subsets") or [] if s["name"] not in new_subsets]
    if kept:
        spec["subsets"] = spec.get("subsets", []) + kept
    changed = [s["name"] for s in old.get("subsets") or [] if new_subsets.get(s["name"], s) != s]
    if changed:
        notes.append(f"{key}: subset {', '.join(changed)} of the new release from the first step")
    for field in _differing(old, new, skip={"subsets"}):
        notes.append(f"{key}: {field} of the new release from the first step")
    return spec


def _differing(old: Obj, new: Obj, skip: Collection[str] = ()) -> list[str]:
    """The keys whose values differ between the two dicts (one side missing counts), in a stable order."""
    keys = list(new) + [k for k in old if k not in new]
    return [k for k in keys if k not in skip and old.get(k) != new.get(k)]


def _blend_virtual_service(key: str, old: Obj, new: Obj, p: float, notes: list[str]) -> Obj:
    outside_http = _differing(old, new, skip={"http"})
    if outside_http:
        notes.append(f"{key}: {', '.join(outside_http)} differ; the new release's spec from the first step")
        return copy.deepcopy(new)
    old_rules, new_rules = old.get("http") or [], new.get("http") or []
    if len(old_rules) != len(new_rules) or any(o.get("match") != n.get("match")
                                               for o, n in zip(old_rules, new_rules)):
        # Rules are first-match-wins: splitting rule sets with different matches has no meaning.
        notes.append(f"{key}: http rules match differently; the new release's http rules from the first step")
        return copy.deepcopy(new)
    spec = copy.deepcopy(new)
    spec["http"] = [_blend_rule(f"{key} {_rule_name(n, i)}", o, n, p, notes)
                    for i, (o, n) in enumerate(zip(old_rules, new_rules))]
    return spec


def _rule_name(rule: Obj, index: int) -> str:
    return f"http[{index}]" + (f" ({rule['name']})" if rule.get("name") else "")


def _blend_rule(where: str, old: Obj, new: Obj, p: float, notes: list[str]) -> Obj:
    if old == new:
        return copy.deepcopy(new)
    old_action, new_action = _action(old), _action(new)
    if old_action != "route" or new_action != "route":
        notes.append(f"{where}: {old_action} becomes the new release's {new_action} from the first step")
        return copy.deepcopy(new)
    split: Obj = {"route": blend_routes(old["route"], new["route"], p)}
    fault = _blend_fault(where, old.get("fault") or {}, new.get("fault") or {}, p, notes)
    if fault:
        split["fault"] = fault
    if "mirrors" in old or "mirrors" in new:
        # `mirrors` cannot sit beside `mirror`; a list of policies is taken whole, as any other field.
        split |= {f: copy.deepcopy(new[f]) for f in ("mirror", "mirrorPercentage", "mirrorPercent") if f in new}
    else:
        split |= _blend_mirror(where, old, new, p, notes)
    unsplit = _differing(old, new, skip=SPLIT_RULE_FIELDS)
    if unsplit:
        notes.append(f"{where}: {', '.join(unsplit)} of the new release from the first step")
    # New's field order, so a blended rule reads like the release it is heading to.
    rule = {k: split.pop(k) if k in SPLIT_RULE_FIELDS else copy.deepcopy(v)
            for k, v in new.items() if k not in SPLIT_RULE_FIELDS or k in split}
    return rule | split


def _action(rule: Obj) -> str:
    return next((a for a in ROUTE_ACTIONS if rule.get(a)), "nothing")


def route_shares(route: Sequence[Obj]) -> list[tuple[Obj, float]]:
    """Each route entry with its share of traffic; a lone destination takes all of it, whatever its weight."""
    if len(route) == 1:
        return [(route[0], 1.0)]
    total = sum(entry.get("weight") or 0 for entry in route)
    return [(entry, (entry.get("weight") or 0) / total) for entry in route]


def blend_routes(old: Sequence[Obj], new: Sequence[Obj], p: float) -> list[Obj]:
    """Old's shares scaled by 1 - p and new's by p, merged per (destination, headers), as integer weights."""
    merged: dict[str, tuple[Obj, float]] = {}
    for route, scale in ((old, 1 - p), (new, p)):
        for entry, share in route_shares(route):
            identity = repr((entry["destination"], entry.get("headers")))
            first, before = merged.get(identity, (entry, 0.0))
            merged[identity] = (first, before + share * scale)
    weights = _apportion([share for _, share in merged.values()], WEIGHT_TOTAL)
    out = []
    for (entry, _), weight in zip(merged.values(), weights):
        if weight > 0:
            blended = {k: copy.deepcopy(v) for k, v in entry.items() if k != "weight"}
            out.append(blended | {"weight": weight})
    if len(out) == 1:
        del out[0]["weight"]  # a lone destination takes all traffic; the dumps write it without weight
    return out


def _apportion(shares: list[float], total: int) -> list[int]:
    """Integers summing to `total` in proportion to `shares` (largest remainder: no share is off by 1 or more)."""
    exact = [share * total / sum(shares) for share in shares]
    floors = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: floors[i] - exact[i])
    for i in by_remainder[: total - sum(floors)]:
        floors[i] += 1
    return floors


def _percent(value: float) -> dict[str, float]:
    return {"value": float(round(value, 2))}


def _blend_fault(where: str, old: Obj, new: Obj, p: float, notes: list[str]) -> Obj:
    fault = {}
    for part in ("delay", "abort"):
        o, n = old.get(part), new.get(part)
        if o is None and n is None:
            continue
        if o is not None and n is not None and _without_percent(o) != _without_percent(n):
            notes.append(f"{where}: fault {part} of the new release from the first step, "
                         f"at the interpolated percentage")
        share = _fault_percent(o) * (1 - p) + _fault_percent(n) * p
        if share > 0:
            fault[part] = _without_percent(n if n is not None else o) | {"percentage": _percent(share)}
    return fault


def _without_percent(part: Obj) -> Obj:
    return {k: copy.deepcopy(v) for k, v in part.items() if k not in ("percentage", "percent")}


def _fault_percent(part: Obj | None) -> float:
    """`percentage.value`, else the deprecated integer `percent`, else 0: Weir injects nothing without one."""
    if part is None:
        return 0.0
    if "percentage" in part:
        return float(part["percentage"].get("value", 0.0))
    return float(part.get("percent") or 0)


def _mirror_percent(rule: Obj) -> float:
    """Istio: `mirrorPercentage`, else the deprecated `mirrorPercent`, else 100 when a mirror is set."""
    if not rule.get("mirror"):
        return 0.0
    if "mirrorPercentage" in rule:
        return float(rule["mirrorPercentage"].get("value", 0.0))
    return float(rule.get("mirrorPercent", 100))


def _blend_mirror(where: str, old: Obj, new: Obj, p: float, notes: list[str]) -> Obj:
    o, n = old.get("mirror"), new.get("mirror")
    if o and n and o != n:
        notes.append(f"{where}: mirror to the new release's destination from the first step, "
                     f"at the interpolated percentage")
    share = _mirror_percent(old) * (1 - p) + _mirror_percent(new) * p
    if share <= 0:
        return {}
    return {"mirror": copy.deepcopy(n or o), "mirrorPercentage": _percent(share)}
