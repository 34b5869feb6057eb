"""Reading the Prometheus text exposition format: what a proxy's `/stats/prometheus` (and `meshctl stats W`)
returns, as (name, labels, value) samples. The one reader of proxies' metrics in the project: the dashboard
(mesh.control.dashboard.metrics) and, on the runner's side, a scenario's counter selectors
(mesh.local.expectations), the growth of counters and response flags between two scrapes
(mesh.local.judgement), the promotion gates (mesh.local.gates), the bench report and the metrics tests.
Pure text in, samples out; malformed lines are skipped, not refused: a scrape is not ours to validate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


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


def samples(text: str, names: tuple[str, ...] | None = None) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text exposition as (name, labels, value); comments skipped. `names`: only
    the samples of these metrics (a proxy's scrape is mostly other series: lines are skipped unparsed)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or (names is not None and not line.startswith(names)):
            continue
        series, _, value = line.rpartition(" ")
        try:
            name, labels = parse_selector(series)
            sample = (name, labels, float(value))
        except ValueError:
            continue  # not a sample line; a scrape is not ours to validate
        if names is None or name in names:
            out.append(sample)
    return out


def total(text: str, name: str, labels: Mapping[str, str]) -> float:
    """The sum of the samples `name` whose labels include `labels`."""
    return sum(v for n, lab, v in samples(text) if n == name and all(lab.get(k) == x for k, x in labels.items()))


def new_flags(before: str, after: str) -> set[str]:
    """Response flags on istio_requests_total series that grew between the two scrapes."""
    old = {tuple(sorted(lab.items())): v for n, lab, v in samples(before) if n == "istio_requests_total"}
    seen: set[str] = set()
    for name, labels, value in samples(after):
        if name == "istio_requests_total" and value > old.get(tuple(sorted(labels.items())), 0.0):
            seen.update(labels.get("response_flags", "-").split(","))
    return seen - {"-", ""}
