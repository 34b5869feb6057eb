"""Istio's request metrics read back from one proxy's Prometheus text, and the delta of two scrapes.

Pure: `parse` keeps `istio_requests_total` and the buckets of `istio_request_duration_milliseconds` (read
with mesh.control.exposition; the label names of mesh.proxy.stats, which this package does not import:
DESIGN.md principle 9), `delta`
subtracts two scrapes of one proxy with Prometheus' counter-reset rule, `quantile` is Prometheus'
`histogram_quantile`. Next: mesh.control.dashboard.graph turns the deltas of every proxy into edges.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from mesh.control import exposition

REQUESTS = "istio_requests_total"
BUCKETS = "istio_request_duration_milliseconds_bucket"
UNKNOWN = "unknown"

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs: one series


@dataclass(frozen=True, slots=True)
class Series:
    """One label set: its request count and its cumulative latency buckets (upper bound ms, count)."""

    count: float
    buckets: tuple[tuple[float, float], ...] = ()  # ascending bounds, +Inf last


@dataclass(frozen=True, slots=True)
class Scrape:
    """Everything one proxy reported at one moment (`at`: the scraper's monotonic clock)."""

    at: float
    series: Mapping[Labels, Series]


def parse(text: str, at: float) -> Scrape:
    counts: dict[Labels, float] = {}
    buckets: dict[Labels, list[tuple[float, float]]] = {}
    for name, pairs, number in exposition.samples(text, (REQUESTS, BUCKETS)):
        if name == REQUESTS:
            counts[_key(pairs)] = number
        elif "le" in pairs:
            try:
                bound = float(pairs.pop("le"))  # "+Inf" parses as inf
            except ValueError:
                continue
            buckets.setdefault(_key(pairs), []).append((bound, number))
    series = {key: Series(count, tuple(sorted(buckets.get(key, ())))) for key, count in counts.items()}
    return Scrape(at, MappingProxyType(series))


def delta(before: Scrape, after: Scrape) -> dict[Labels, Series]:
    """What happened between two scrapes of one proxy. A series that is new, or smaller than before (the
    proxy restarted: a counter reset), counts whole, as Prometheus' `increase` does."""
    out: dict[Labels, Series] = {}
    for key, now in after.series.items():
        then = before.series.get(key)
        if then is None or now.count < then.count:
            out[key] = now
            continue
        old = dict(then.buckets)
        out[key] = Series(now.count - then.count, tuple((b, max(0.0, c - old.get(b, 0.0))) for b, c in now.buckets))
    return out


def merge_buckets(series: Iterable[Series]) -> tuple[tuple[float, float], ...]:
    total: dict[float, float] = {}
    for s in series:
        for bound, count in s.buckets:
            total[bound] = total.get(bound, 0.0) + count
    return tuple(sorted(total.items()))


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets: linear inside the bucket holding rank
    q × total; None without observations; the highest finite bound when the rank falls in +Inf."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            if cumulative == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        lower, below = bound, cumulative
    return lower


def labels(key: Labels) -> dict[str, str]:
    return dict(key)


def _key(pairs: Mapping[str, str]) -> Labels:
    return tuple(sorted(pairs.items()))
