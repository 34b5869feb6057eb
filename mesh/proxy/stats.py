"""Istio's standard request metrics, kept per label set and rendered as Prometheus text on scrape.

The hot path only does a dict lookup and a few additions (`RequestStats.record`); label strings are
built when `/stats/prometheus` is read. Label names and histogram buckets are Istio's, so existing
dashboards and Kiali queries work on them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

# Istio's default buckets for istio_request_duration_milliseconds.
DURATION_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
                       600000, 1800000, 3600000)

# The label set a proxy knows before the response: who called, who serves, which service, how secured.
PEER_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "connection_security_policy",
    "source_principal",  # SPIFFE IDs of the two certificates of a mutual TLS connection, else "unknown"
    "destination_principal",
)
RESPONSE_LABELS = ("response_code", "response_flags")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label_text(names: Iterable[str], values: Iterable[object]) -> str:
    return ",".join(f'{name}="{_escape(str(value))}"' for name, value in zip(names, values))


class Series:
    __slots__ = ("count", "total_ms", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.total_ms = 0.0
        self.buckets = [0] * (len(DURATION_BUCKETS_MS) + 1)


class RequestStats:
    """`istio_requests_total` and `istio_request_duration_milliseconds` for one proxy."""

    __slots__ = ("series",)

    def __init__(self) -> None:
        self.series: dict[tuple, Series] = {}

    def record(self, peer: tuple, code: int, flags: str, duration_ms: float) -> None:
        key = (peer, code, flags)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        series.count += 1
        series.total_ms += duration_ms
        series.buckets[bisect.bisect_left(DURATION_BUCKETS_MS, duration_ms)] += 1

    def render(self) -> list[str]:
        lines = ["# TYPE istio_requests_total counter"]
        histogram = ["# TYPE istio_request_duration_milliseconds histogram"]
        names = PEER_LABELS + RESPONSE_LABELS
        for (peer, code, flags), series in sorted(self.series.items(), key=lambda item: str(item[0])):
            labels = label_text(names, (*peer, code, flags))
            lines.append(f"istio_requests_total{{{labels}}} {series.count}")
            running = 0
            for bound, count in zip(DURATION_BUCKETS_MS, series.buckets):
                running += count
                histogram.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="{bound}"}} {running}')
            histogram.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="+Inf"}} {series.count}')
            histogram.append(f"istio_request_duration_milliseconds_sum{{{labels}}} {series.total_ms:.3f}")
            histogram.append(f"istio_request_duration_milliseconds_count{{{labels}}} {series.count}")
        return lines + histogram


class Counters:
    """Named proxy-internal counters and gauges (pool, config, overflow...), rendered with a `weir_` prefix."""

    __slots__ = ("values", "gauges")

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.values[key] = self.values.get(key, 0) + amount

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self.gauges[name] = read

    def render(self) -> list[str]:
        lines = []  # values as str(), not `:g`, which rounds a counter past six digits
        for (name, labels), value in sorted(self.values.items()):
            text = label_text((k for k, _ in labels), (v for _, v in labels))
            lines.append(f"weir_{name}{{{text}}} {value}" if text else f"weir_{name} {value}")
        for name, read in sorted(self.gauges.items()):
            lines.append(f"weir_{name} {read()}")
        return lines
