"""What a client must observe when a routing scenario is applied: read from the scenario, checked on results.

Every scenario under `stacks/routing/` carries, on exactly one resource (the VirtualService the scenario is
about), the annotation `weir.dev/expect`: a YAML document saying what traffic to send and what must be seen.
Istio accepts any annotation, so the file still applies unchanged to a real cluster. The e2e tests
(tests/e2e/test_scenarios.py) and the smoke playbooks both run it: a *runner* sends the requests and scrapes
the sidecars, this module only parses and judges (no HTTP, no processes).

The annotation (every key but `requests` and `status` optional)::

    path: /gateway/books            # what to request through the ingress (default /gateway/books)
    headers: {end-user: jason}      # request headers (default none)
    requests: 200                   # how many requests, in all
    concurrency: 1                  # how many at a time (threads), at most `requests` (default 1)
    setup:                          # app failure switches set before sending, reset afterwards
      - {chaos: ratings-v1, errorRate: 0.5}           # `meshctl chaos WORKLOAD --error-rate 0.5`
      - {chaos: books-v1, delay: 0.2s, status: 503}   # --delay 0.2 (seconds or a duration), --status
    status:                         # share of all responses per status code; a code not listed must not
      "200": [0.82, 1.0]            #   appear (0 = no response: connection error or client timeout)
      "500": [0.0, 0.18]
    split:                          # share of the 200 answers per value of a field of their JSON body
      versions.ratings:             #   (dotted path, list indices as numbers: books.0.rating.stars);
        v1: [0.03, 0.18]            #   a value not listed (or a missing field) must not appear
        v2: [0.82, 0.97]
    latencyMs:                      # client-side latency of all responses, in milliseconds:
      p50: [1900, 3000]             #   min, max, mean or pNN (nearest rank, e.g. p50, p99, p99.9)
    mirrored:                       # requests the mirror's sidecar received from `source` during the run
      workload: ratings-v2          #   (istio_requests_total, reporter="destination")
      source: books-v1
      count: [requests, requests]
    flags:                          # response flags newly counted in a sidecar's istio_requests_total
      gw-v1: [UO]
    counters:                       # growth during the run of a sidecar metric (sum of the series matching
      gw-v1:                        #   a Prometheus selector: name or name{label="value",...})
        weir_circuit_breaker_overflow_total: [1, null]

    probes:                         # single requests past the ingress: through a workload's sidecar
      - {via: ui-v1, url: "http://books.bookinfo:9080/books", status: 403}   # (mesh.local.probes)
      - {direct: books-v1, path: /books, refused: true}

A band `[min, max]` is inclusive; `null` leaves that side open. Shares are fractions in [0, 1]. Counts
may say `requests` for the request count. Ratios must be given bands that a healthy mesh misses only
rarely for the request count: `miss_probability(n, p, band)` gives the binomial chance of a false failure
(keep it under 1e-3; e.g. a 10/90 split over 200 requests: v2 in [0.82, 0.97], 2e-4).

Runners: `load(path)` (a scenario file) or `from_resources(release.resources, file=…)` (a routing release;
both validate through `mesh.api` first), then for each `setup` step run `meshctl <step.meshctl_args()>`,
scrape `meshctl stats W` for W in `expectation.workloads`, send the requests, scrape again,
`check(expectation, Observations(...))` (an empty list means met; re-scrape for a moment when it is not,
mirrors are fire-and-forget), and finally `meshctl <step.reset_args()>` per step. `check_rules` gives the
same failures by rule (`RULES`: status, split, latency, mirrored, flags, counters, probes; only the rules
the expectation states). The one runner is mesh.local.smoke (`exercise`); `Observations.from_dict` takes
the same data as JSON-friendly dicts.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from mesh.api import ConfigError, load_document, load_files
from mesh.api.errors import invalid, problems_of
from mesh.api.resource import Resource
from mesh.api.types import Duration, Model
from mesh.local import probes as probes_mod

ANNOTATION = "weir.dev/expect"
ANNOTATION_PATH = f"metadata.annotations[{ANNOTATION}]"
NO_RESPONSE = 0  # the status a runner records when no HTTP response came back
MISSING = "<missing>"  # the split value of a 200 answer without the field (or not JSON)
MAX_REQUESTS = 10_000
MAX_CONCURRENCY = 64
# Istio/Envoy response flags a sidecar may report (DESIGN.md principle 8), "-" being none.
RESPONSE_FLAGS = frozenset(
    {"NR", "UO", "UT", "FI", "DI", "UF", "URX", "UH", "RBAC", "UC", "UR", "DC", "LR", "RL", "SI", "DPE"}
)
_WORKLOAD = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_PERCENTILE = re.compile(r"p(\d{1,2}(\.\d+)?|100)")
_SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class ExpectationError(ConfigError):
    """A scenario whose `weir.dev/expect` annotation is missing, duplicated or invalid (file, resource and
    field path named, like every `mesh.api` error)."""


# -- bands ---------------------------------------------------------------------------------------------


def _band_pair(value: Any) -> Any:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise invalid(f"invalid band {value!r}: expected [min, max] (null for an open side)")
    return tuple(value)


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(f"invalid {what} {value!r}: expected a number or null")
    return float(value)


def _ordered(low: Any, high: Any) -> None:
    if isinstance(low, float) and isinstance(high, float) and low > high:
        raise invalid(f"invalid band [{low:g}, {high:g}]: min is greater than max")


def _share_band(value: Any) -> tuple[float | None, float | None]:
    low, high = (_number(v, "share") for v in _band_pair(value))
    for v in (low, high):
        if v is not None and not 0.0 <= v <= 1.0:
            raise invalid(f"invalid share {v:g}: must be a fraction in [0, 1]")
    _ordered(low, high)
    return low, high


def _ms_band(value: Any) -> tuple[float | None, float | None]:
    low, high = (_number(v, "latency") for v in _band_pair(value))
    if any(v is not None and v < 0 for v in (low, high)):
        raise invalid("invalid latency: must be >= 0 ms")
    _ordered(low, high)
    return low, high


def _count_bound(value: Any) -> float | str | None:
    if value == "requests":
        return value
    bound = _number(value, "count (a number, requests or null)")
    if bound is not None and bound < 0:
        raise invalid(f"invalid count {bound:g}: must be >= 0")
    return bound


def _count_band(value: Any) -> tuple[float | str | None, float | str | None]:
    low, high = (_count_bound(v) for v in _band_pair(value))
    _ordered(low, high)
    return low, high


ShareBand = Annotated[tuple[float | None, float | None], BeforeValidator(_share_band)]
MsBand = Annotated[tuple[float | None, float | None], BeforeValidator(_ms_band)]
CountBand = Annotated[tuple[float | str | None, float | str | None], BeforeValidator(_count_band)]


def _workload(name: str) -> str:
    if not _WORKLOAD.fullmatch(name):
        raise invalid(f"invalid workload {name!r}: expected a name such as ratings-v1")
    return name


def _in(value: float, band: tuple[float | None, float | None]) -> bool:
    low, high = band
    eps = 1e-9  # shares such as 41/50 against a band edge written in decimal
    return (low is None or value >= low - eps) and (high is None or value <= high + eps)


def _band_text(band: Sequence[Any]) -> str:
    return "[" + ", ".join("null" if v is None else v if isinstance(v, str) else f"{v:g}" for v in band) + "]"


# -- the annotation ------------------------------------------------------------------------------------


class ChaosStep(Model):
    """One `meshctl chaos` switch set before the requests and reset after them."""

    chaos: str
    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    delay: float | None = None  # seconds
    status: int | None = Field(default=None, ge=400, le=599)

    @field_validator("chaos")
    @classmethod
    def _chaos(cls, workload: str) -> str:
        return _workload(workload)

    @field_validator("delay", mode="before")
    @classmethod
    def _delay(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return Duration.parse(value).seconds
            except ValueError as exc:
                raise invalid(str(exc)) from None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise invalid(f"invalid delay {value!r}: expected seconds (>= 0) or a duration such as 200ms")
        return value

    @model_validator(mode="after")
    def _something(self) -> ChaosStep:
        if self.error_rate is None and self.delay is None:
            raise invalid("a chaos step needs errorRate or delay")
        return self

    def meshctl_args(self) -> tuple[str, ...]:
        args = ["chaos", self.chaos]
        if self.error_rate is not None:
            args += ["--error-rate", f"{self.error_rate:g}"]
        if self.delay is not None:
            args += ["--delay", f"{self.delay:g}"]
        if self.status is not None:
            args += ["--status", str(self.status)]
        return tuple(args)

    def reset_args(self) -> tuple[str, ...]:
        return ("chaos", self.chaos, "--reset")


class Mirrored(Model):
    workload: str
    source: str
    count: CountBand

    @field_validator("workload", "source")
    @classmethod
    def _names(cls, workload: str) -> str:
        return _workload(workload)


class Expectation(Model):
    """The validated `weir.dev/expect` annotation of one scenario (see the module docstring)."""

    path: str = "/gateway/books"
    headers: dict[str, str] = Field(default_factory=dict)
    requests: int = Field(ge=1, le=MAX_REQUESTS)
    concurrency: int = Field(default=1, ge=1, le=MAX_CONCURRENCY)
    setup: tuple[ChaosStep, ...] = ()
    status: dict[int, ShareBand] = Field(min_length=1)
    split: dict[str, dict[str, ShareBand]] = Field(default_factory=dict)
    latency_ms: dict[str, MsBand] = Field(default_factory=dict)
    mirrored: Mirrored | None = None
    flags: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    counters: dict[str, dict[str, CountBand]] = Field(default_factory=dict)
    probes: tuple[probes_mod.Probe, ...] = ()  # single requests past the ingress (mesh.local.probes)

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise invalid(f"invalid path {path!r}: must start with /")
        return path

    @field_validator("status")
    @classmethod
    def _codes(cls, status: dict[int, Any]) -> dict[int, Any]:
        for code in status:
            if code != NO_RESPONSE and not 100 <= code <= 599:
                raise invalid(f"invalid status code {code}: expected 100-599 (or 0: no response)", at=str(code))
        return status

    @field_validator("split")
    @classmethod
    def _split(cls, split: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for field_path, values in split.items():
            if not field_path or any(not part for part in field_path.split(".")):
                raise invalid(f"invalid field {field_path!r}: expected a dotted path such as versions.ratings")
            if not values:
                raise invalid("expected at least one value with its band", at=field_path)
        return split

    @field_validator("latency_ms")
    @classmethod
    def _latency(cls, latency: dict[str, Any]) -> dict[str, Any]:
        for stat in latency:
            if stat not in ("min", "max", "mean") and not _PERCENTILE.fullmatch(stat):
                raise invalid(f"invalid statistic {stat!r}: expected min, max, mean or pNN (p50, p99.9)")
        return latency

    @field_validator("flags")
    @classmethod
    def _flags(cls, flags: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for workload, names in flags.items():
            _workload(workload)
            unknown = sorted(set(names) - RESPONSE_FLAGS)
            if unknown or not names:
                raise invalid(f"unknown response flags {unknown}: expected some of {sorted(RESPONSE_FLAGS)}"
                              if unknown else "expected at least one flag", at=workload)
        return flags

    @field_validator("counters")
    @classmethod
    def _counters(cls, counters: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for workload, metrics in counters.items():
            _workload(workload)
            for selector in metrics:
                try:
                    parse_selector(selector)
                except ValueError as exc:
                    raise invalid(str(exc), at=workload) from None
        return counters

    @model_validator(mode="after")
    def _consistent(self) -> Expectation:
        if self.concurrency > self.requests:
            raise invalid(f"concurrency {self.concurrency} is more than the {self.requests} requests",
                          at="concurrency")
        workloads = [step.chaos for step in self.setup]
        if len(set(workloads)) != len(workloads):
            raise invalid("one chaos step per workload", at="setup")
        return self

    @property
    def workloads(self) -> tuple[str, ...]:
        """The sidecars whose stats a runner must scrape before and after the requests."""
        names = set(self.flags) | set(self.counters)
        if self.mirrored is not None:
            names.add(self.mirrored.workload)
        return tuple(sorted(names))


def parse(text: str, *, file: str = "", resource: str = "") -> Expectation:
    """The annotation's value → `Expectation`, or `ExpectationError` naming file, resource and field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExpectationError(f"invalid YAML: {exc}".replace("\n", " "), file=file, resource=resource,
                               path=ANNOTATION_PATH) from None
    if not isinstance(data, dict):
        raise ExpectationError(f"expected a mapping, got {type(data).__name__}", file=file, resource=resource,
                               path=ANNOTATION_PATH)
    try:
        return Expectation.model_validate(data)
    except ValidationError as exc:
        problems = problems_of(exc, (ANNOTATION_PATH,))
        path, message = problems[0]
        raise ExpectationError(message, file=file, resource=resource, path=path, problems=problems) from None


def load(scenario_path: str | os.PathLike[str]) -> Expectation:
    """The expectation of a scenario file. The file is loaded (and validated) through `mesh.api`; exactly
    one of its resources must carry the annotation."""
    file = os.fspath(scenario_path)
    return _from_loaded(load_files([file]), file=file)


def from_resources(resources: Iterable[Mapping[str, Any]], *, file: str) -> Expectation:
    """The expectation of a set of dumped custom resources (a routing release's), each validated through
    `mesh.api` as `load` validates a file's; `file` names where they come from in errors."""
    return _from_loaded([load_document(dict(doc), file) for doc in resources], file=file)


def _from_loaded(resources: Sequence[Resource], *, file: str) -> Expectation:
    carriers = [r for r in resources if ANNOTATION in r.metadata.annotations]
    if not carriers:
        raise ExpectationError(f"no resource carries the {ANNOTATION} annotation", file=file)
    if len(carriers) > 1:
        names = ", ".join(r.key for r in carriers)
        raise ExpectationError(f"only one resource may carry the {ANNOTATION} annotation, found: {names}",
                               file=file)
    (carrier,) = carriers
    return parse(carrier.metadata.annotations[ANNOTATION], file=file, resource=carrier.key)


# -- observations ---------------------------------------------------------------------------------------


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


# -- Prometheus text --------------------------------------------------------------------------------------


def parse_selector(selector: str) -> tuple[str, dict[str, str]]:
    """`name` or `name{label="value",...}` → (name, labels); ValueError when malformed."""
    m = _SELECTOR.fullmatch(selector.strip())
    if m is None:
        raise ValueError(f"invalid metric selector {selector!r}: expected name or name{{label=\"value\"}}")
    return m.group(1), _labels(m.group(2) or "", selector)


def _labels(text: str, where: str) -> dict[str, str]:
    labels, pos = {}, 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if m is None:
            raise ValueError(f"invalid labels in {where!r}")
        labels[m.group(1)] = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), m.group(2))
        pos = m.end()
    return labels


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text exposition as (name, labels, value); comments skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        try:
            out.append((*parse_selector(series), float(value)))
        except ValueError:
            continue  # not a sample line; a scrape is not ours to validate
    return out


def _total(text: str, name: str, labels: Mapping[str, str]) -> float:
    return sum(v for n, lab, v in samples(text) if n == name and all(lab.get(k) == x for k, x in labels.items()))


def _new_flags(before: str, after: str) -> set[str]:
    """Response flags on istio_requests_total series that grew between the two scrapes."""
    old = {tuple(sorted(lab.items())): v for n, lab, v in samples(before) if n == "istio_requests_total"}
    seen: set[str] = set()
    for name, labels, value in samples(after):
        if name == "istio_requests_total" and value > old.get(tuple(sorted(labels.items())), 0.0):
            seen.update(labels.get("response_flags", "-").split(","))
    return seen - {"-", ""}


# -- judging ---------------------------------------------------------------------------------------------


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
        if not _in(share, band):
            expected = _band_text(band) if key in bands else "none (not listed)"
            failures.append(f"{kind} {key}: share {share:.3f} ({seen}/{total}), expected {expected}")
    return failures


def _count(bound: float | str | None, requests: int) -> float | None:
    return float(requests) if bound == "requests" else bound  # type: ignore[return-value]


RULES = ("status", "split", "latency", "mirrored", "flags", "counters", "probes")  # in the order judged


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
        if not _in(value, band):
            failures.append(f"latency {stat}: {value:.0f} ms, expected {_band_text(band)} ms")
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
    grown = (_total(obs.stats_after[m.workload], "istio_requests_total", labels)
             - _total(obs.stats_before[m.workload], "istio_requests_total", labels))
    band = tuple(_count(b, exp.requests) for b in m.count)
    if _in(grown, band):
        return []
    return [f"mirrored: {m.workload} received {grown:g} requests from {m.source}, expected {_band_text(band)}"]


def _check_flags(exp: Expectation, obs: Observations) -> list[str]:
    failures = _unscraped(obs, list(exp.flags))
    for workload, wanted in exp.flags.items():
        if workload not in obs.stats_before or workload not in obs.stats_after:
            continue
        seen = _new_flags(obs.stats_before[workload], obs.stats_after[workload])
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
            name, labels = parse_selector(selector)
            grown = (_total(obs.stats_after[workload], name, labels)
                     - _total(obs.stats_before[workload], name, labels))
            band = tuple(_count(b, exp.requests) for b in count)
            if not _in(grown, band):
                failures.append(f"counter {workload} {selector}: grew by {grown:g}, expected {_band_text(band)}")
    return failures


def miss_probability(requests: int, p: float, band: tuple[float | None, float | None]) -> float:
    """The chance that a share with true probability `p` over `requests` trials falls outside `band`:
    how often a healthy mesh would fail that band (binomial, exact)."""
    miss = 0.0
    for k in range(requests + 1):
        if not _in(k / requests, band):
            miss += math.comb(requests, k) * p**k * (1 - p) ** (requests - k)
    return miss
