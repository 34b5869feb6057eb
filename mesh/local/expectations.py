"""What a client must observe when a routing scenario is applied: read from the scenario, checked on results.

Every scenario under `stacks/routing/` carries, on exactly one resource (the VirtualService the scenario is
about), the annotation `weir.dev/expect`: a YAML document saying what traffic to send and what must be seen.
Istio accepts any annotation, so the file still applies unchanged to a real cluster. The e2e tests
(tests/e2e/test_scenarios.py) and the smoke playbooks both run it: a *runner* sends the requests and scrapes
the sidecars, this module only parses (the model of the annotation, validated) and mesh.local.judgement
judges what the runner observed against it (no HTTP, no processes).

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
may say `requests` for the request count (mesh.local.bands). Ratios must be given bands that a healthy mesh
misses only rarely for the request count: `bands.miss_probability(n, p, band)` gives the binomial chance of
a false failure (keep it under 1e-3; e.g. a 10/90 split over 200 requests: v2 in [0.82, 0.97], 2e-4).

Runners: `load(path)` (a scenario file) or `from_resources(release.resources, file=…)` (a routing release;
both validate through `mesh.api` first), then for each `setup` step run `meshctl <step.meshctl_args()>`,
scrape `meshctl stats W` for W in `expectation.workloads`, send the requests, scrape again,
`judgement.check(expectation, judgement.Observations(...))` (an empty list means met; re-scrape for a moment
when it is not, mirrors are fire-and-forget), and finally `meshctl <step.reset_args()>` per step.
`judgement.check_rules` gives the same failures by rule (`judgement.RULES`: status, split, latency, mirrored,
flags, counters, probes; only the rules the expectation states). The one runner is mesh.local.smoke
(`exercise`); `judgement.Observations.from_dict` takes the same data as JSON-friendly dicts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from mesh.api import ConfigError, load_document, load_files
from mesh.api.errors import invalid, problems_of
from mesh.api.resource import Resource
from mesh.api.types import Duration, Model
from mesh.control import exposition
from mesh.local import probes as probes_mod
from mesh.local.bands import CountBand, MsBand, ShareBand

ANNOTATION = "weir.dev/expect"
ANNOTATION_PATH = f"metadata.annotations[{ANNOTATION}]"
NO_RESPONSE = 0  # the status a runner records when no HTTP response came back
MAX_REQUESTS = 10_000
MAX_CONCURRENCY = 64
# Istio/Envoy response flags a sidecar may report (DESIGN.md principle 8), "-" being none.
RESPONSE_FLAGS = frozenset(
    {"NR", "UO", "UT", "FI", "DI", "UF", "URX", "UH", "RBAC", "UC", "UR", "DC", "LR", "RL", "SI", "DPE"}
)
_WORKLOAD = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_PERCENTILE = re.compile(r"p(\d{1,2}(\.\d+)?|100)")


class ExpectationError(ConfigError):
    """A scenario whose `weir.dev/expect` annotation is missing, duplicated or invalid (file, resource and
    field path named, like every `mesh.api` error)."""


def _workload(name: str) -> str:
    if not _WORKLOAD.fullmatch(name):
        raise invalid(f"invalid workload {name!r}: expected a name such as ratings-v1")
    return name


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
                    exposition.parse_selector(selector)
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
