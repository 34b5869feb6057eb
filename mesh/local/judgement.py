"""Judging what a runner observed against a scenario's expectation: the failures, in words, rule by rule.

The expectation comes from mesh.local.expectations (the `weir.dev/expect` annotation); a runner (the one
runner is mesh.local.smoke's `exercise`) collects `Observations`: every response, `meshctl stats W` for W in
`expectation.workloads` scraped before the first request and after the last (read by
mesh.control.exposition), and the probe results (judged by mesh.local.probes). `check(expectation,
observations)` lists every way they miss it (an empty list means met; re-scrape for a moment when it is
not, mirrors are fire-and-forget). `check_rules` gives the same failures by rule (`RULES`: status, split,
latency, mirrored, flags, counters, probes; only the rules the expectation states).
`Observations.from_dict` takes the same data as JSON-friendly dicts. Pure: no HTTP, no processes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh.control import exposition
from mesh.local import probes as probes_mod
from mesh.local.bands import band_text, in_band
from mesh.local.expectations import Expectation

MISSING = "<missing>"  # the split value of a 200 answer without the field (or not JSON)
RULES = ("status", "split", "latency", "mirrored", "flags", "counters", "probes")  # in the order judged


@dataclass(frozen=True, slots=True)
class Response:
    status: int  # NO_RESPONSE (0) when the request got no HTTP answer
    body: bytes | str
    latency_ms: float


@dataclass(frozen=True)
class Observations:
    """What a runner collected: every response, and `meshctl stats W` (Prometheus text) per workload of
    `Expectation.workloads`, scraped just before the first request and after the last."""

    responses: Sequence[Response]
    stats_before: Mapping[str, str] = field(default_factory=dict)
    stats_after: Mapping[str, str] = field(default_factory=dict)
    probe_results: Sequence[probes_mod.ProbeResult] = ()  # one per `Expectation.probes`, in order

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observations:
        """`{"responses": [{"status", "body", "latencyMs"}], "statsBefore": {W: text}, "statsAfter": …,
        "probeResults": [{"status", "body", "error"}]}`."""
        return cls(
            responses=[Response(int(r["status"]), r.get("body", ""), float(r["latencyMs"]))
                       for r in data.get("responses", [])],
            stats_before=dict(data.get("statsBefore", {})),
            stats_after=dict(data.get("statsAfter", {})),
            probe_results=[probes_mod.ProbeResult.from_dict(r) for r in data.get("probeResults", [])],
        )


def percentile(values: Sequence[float], stat: str) -> float:
    """min, max, mean or pNN (nearest rank) of a non-empty sequence."""
    ordered = sorted(values)
    if stat == "min":
        return ordered[0]
    if stat == "max":
        return ordered[-1]
    if stat == "mean":
        return sum(ordered) / len(ordered)
    rank = math.ceil(float(stat[1:]) / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def field_value(body: bytes | str, path: str) -> str:
    """The value at a dotted path of a JSON body, as text (strings as they are, others as JSON)."""
    try:
        node: Any = json.loads(body)
    except (ValueError, TypeError):
        return MISSING
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node if isinstance(node, str) else json.dumps(node, ensure_ascii=False)


def _shares(kind: str, counts: Mapping[Any, int], total: int, bands: Mapping[Any, tuple]) -> list[str]:
    failures = []
    for key in sorted(set(counts) | set(bands), key=str):
        seen = counts.get(key, 0)
        band = bands.get(key, (0.0, 0.0))
        share = seen / total
        if not in_band(share, band):
            expected = band_text(band) if key in bands else "none (not listed)"
            failures.append(f"{kind} {key}: share {share:.3f} ({seen}/{total}), expected {expected}")
    return failures


def _count(bound: float | str | None, requests: int) -> float | None:
    return float(requests) if bound == "requests" else bound  # type: ignore[return-value]


def rules_of(expectation: Expectation) -> tuple[str, ...]:
    """The rules an expectation states (`status` always), in `RULES` order."""
    stated = {"status": True, "split": bool(expectation.split), "latency": bool(expectation.latency_ms),
              "mirrored": expectation.mirrored is not None, "flags": bool(expectation.flags),
              "counters": bool(expectation.counters), "probes": bool(expectation.probes)}
    return tuple(rule for rule in RULES if stated[rule])


def check(expectation: Expectation, observations: Observations) -> list[str]:
    """Every way the observations miss the expectation, in words; empty when it is met."""
    return [failure for failures in check_rules(expectation, observations).values() for failure in failures]


def check_rules(expectation: Expectation, observations: Observations) -> dict[str, list[str]]:
    """`check`, by rule: {rule: failures} for every rule the expectation states (an empty list: met)."""
    judges = {"status": _check_status, "split": _check_split, "latency": _check_latency,
              "mirrored": _check_mirrored, "flags": _check_flags, "counters": _check_counters,
              "probes": _check_probes}
    return {rule: judges[rule](expectation, observations) for rule in rules_of(expectation)}


def _no_responses(obs: Observations) -> list[str]:
    return [] if obs.responses else ["no responses to judge"]


def _check_status(exp: Expectation, obs: Observations) -> list[str]:
    failures = []
    if len(obs.responses) != exp.requests:
        failures.append(f"requests: {len(obs.responses)} responses collected, expected {exp.requests}")
    if not obs.responses:
        return failures + _no_responses(obs)
    codes: dict[int, int] = {}
    for r in obs.responses:
        codes[r.status] = codes.get(r.status, 0) + 1
    return failures + _shares("status", codes, len(obs.responses), exp.status)


def _check_split(exp: Expectation, obs: Observations) -> list[str]:
    if not obs.responses:
        return _no_responses(obs)
    failures = []
    ok = [r for r in obs.responses if r.status == 200]
    for field_path, bands in exp.split.items():
        if not ok:
            failures.append(f"split {field_path}: no 200 answers to measure")
            continue
        values: dict[str, int] = {}
        for r in ok:
            value = field_value(r.body, field_path)
            values[value] = values.get(value, 0) + 1
        failures += _shares(f"split {field_path} =", values, len(ok), bands)
    return failures


def _check_latency(exp: Expectation, obs: Observations) -> list[str]:
    if not obs.responses:
        return _no_responses(obs)
    latencies = [r.latency_ms for r in obs.responses]
    failures = []
    for stat, band in exp.latency_ms.items():
        value = percentile(latencies, stat)
        if not in_band(value, band):
            failures.append(f"latency {stat}: {value:.0f} ms, expected {band_text(band)} ms")
    return failures


def _check_probes(exp: Expectation, obs: Observations) -> list[str]:
    return probes_mod.check(exp.probes, obs.probe_results)


def _unscraped(obs: Observations, workloads: Sequence[str]) -> list[str]:
    return [f"stats of {w} not scraped before and after the requests"
            for w in workloads if w not in obs.stats_before or w not in obs.stats_after]


def _check_mirrored(exp: Expectation, obs: Observations) -> list[str]:
    m = exp.mirrored
    assert m is not None  # only judged when stated
    missing = _unscraped(obs, [m.workload])
    if missing:
        return missing
    labels = {"reporter": "destination", "source_workload": m.source}
    grown = (exposition.total(obs.stats_after[m.workload], "istio_requests_total", labels)
             - exposition.total(obs.stats_before[m.workload], "istio_requests_total", labels))
    band = tuple(_count(b, exp.requests) for b in m.count)
    if in_band(grown, band):
        return []
    return [f"mirrored: {m.workload} received {grown:g} requests from {m.source}, expected {band_text(band)}"]


def _check_flags(exp: Expectation, obs: Observations) -> list[str]:
    failures = _unscraped(obs, list(exp.flags))
    for workload, wanted in exp.flags.items():
        if workload not in obs.stats_before or workload not in obs.stats_after:
            continue
        seen = exposition.new_flags(obs.stats_before[workload], obs.stats_after[workload])
        for flag in wanted:
            if flag not in seen:
                failures.append(f"flags {workload}: no new response with flag {flag} "
                                f"(new flags: {', '.join(sorted(seen)) or 'none'})")
    return failures


def _check_counters(exp: Expectation, obs: Observations) -> list[str]:
    failures = _unscraped(obs, list(exp.counters))
    for workload, metrics in exp.counters.items():
        if workload not in obs.stats_before or workload not in obs.stats_after:
            continue
        for selector, count in metrics.items():
            name, labels = exposition.parse_selector(selector)
            grown = (exposition.total(obs.stats_after[workload], name, labels)
                     - exposition.total(obs.stats_before[workload], name, labels))
            band = tuple(_count(b, exp.requests) for b in count)
            if not in_band(grown, band):
                failures.append(f"counter {workload} {selector}: grew by {grown:g}, expected {band_text(band)}")
    return failures
