"""Istio's standard request metrics, kept per label set and rendered as Prometheus text on scrape.

The hot path only does a dict lookup and a few additions (`RequestStats.record`); label strings are
built when `/stats/prometheus` is read. Label names and histogram buckets are Istio's, so existing
dashboards and Kiali queries work on them.

`istio_tcp_connections_opened_total` / `_closed_total` carry Istio's TCP label set (TCP_LABELS: the peer
labels with request_protocol "tcp", the derived ones but gRPC's status, response_flags), filled from what
the accepting proxy knows when a connection opens (mesh.proxy.runtime `tcp_labels`), so some stay "unknown":
- inbound (reporter destination): the destination is this workload and its service; with mutual TLS the
  principals are the client certificate's SPIFFE ID and ours. The source workload, namespace, app and
  version stay "unknown": Istio learns them by peer metadata exchange, Weir from the `x-weir-peer` header
  of each request, which no connection has when it opens; Istio does not derive them from the SPIFFE ID
  either (its connection metrics without metadata exchange report the principal and an unknown workload).
- outbound and gateway (reporter source): the source is this workload; the destination is chosen per
  request, not per connection (one listener serves every service), so every destination label, the
  principals (mutual TLS or not is decided per upstream) and the security policy (Istio's client side
  reports "unknown" there anyway) stay "unknown".
Istio itself counts these metrics only for connections it proxies as TCP; Weir proxies HTTP/1.1 and counts
its downstream connections, so `sum(opened - closed)` is a proxy's open connections.
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
# Derived from the peer labels when rendering (nothing more is kept per request): Istio's canonical service
# and revision (the app / version labels), the cluster ids, and the gRPC status (Weir proxies HTTP/1.1).
DERIVED_LABELS = ("source_canonical_service", "source_canonical_revision", "destination_canonical_service",
                  "destination_canonical_revision", "source_cluster", "destination_cluster", "grpc_response_status")
CLUSTER_ID = "Kubernetes"  # Istio's default cluster id (values.global.multiCluster.clusterName)
UNKNOWN = "unknown"
# Istio's buckets for istio_request_bytes / istio_response_bytes: 1 B to 1 GB, ×10 each.
SIZE_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000)
# The labels of istio_tcp_connections_opened_total / _closed_total, Istio's: the peer labels, the derived
# ones but gRPC's status, and response_flags ("-": a connection has no local reply of its own).
TCP_LABELS = PEER_LABELS + DERIVED_LABELS[:-1] + ("response_flags",)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label_text(names: Iterable[str], values: Iterable[object]) -> str:
    return ",".join(f'{name}="{_escape(str(value))}"' for name, value in zip(names, values))


def _canonical(workload: str, app: str, version: str) -> tuple[str, str, str]:
    """(canonical service, canonical revision, cluster) of one side, as Istio derives them from the pod's
    `app` and `version` labels (else the workload name and "latest"); all "unknown" for an unknown peer."""
    if workload == UNKNOWN:
        return UNKNOWN, "latest", UNKNOWN
    return (app if app != UNKNOWN else workload), (version if version != UNKNOWN else "latest"), CLUSTER_ID


def derived_labels(peer: tuple) -> tuple:
    """DERIVED_LABELS' values for a peer tuple (PEER_LABELS order)."""
    src = _canonical(peer[1], peer[3], peer[4])
    dst = _canonical(peer[5], peer[7], peer[8])
    return src[0], src[1], dst[0], dst[1], src[2], dst[2], ""


class Series:
    __slots__ = ("count", "total_ms", "buckets", "request_bytes", "request_sizes", "response_bytes", "response_sizes")

    def __init__(self) -> None:
        self.count = 0
        self.total_ms = 0.0
        self.buckets = [0] * (len(DURATION_BUCKETS_MS) + 1)
        self.request_bytes = 0
        self.request_sizes = [0] * (len(SIZE_BUCKETS) + 1)
        self.response_bytes = 0
        self.response_sizes = [0] * (len(SIZE_BUCKETS) + 1)


# The duration bounds as floats, for the per-request search: a float compared with an int takes CPython's slow
# path, twice the time of two floats.
_DURATION_BOUNDS = tuple(float(bound) for bound in DURATION_BUCKETS_MS)
_bucket = bisect.bisect_left
# `RequestStats.record`'s index by peer tuple identity: peer tuples of distinct identity seen before it is
# cleared (each view push makes new ones; a proxy has one per endpoint and caller).
MAX_INDEXED_PEERS = 4096
# Label sets kept (peer × code × flags). Some labels come from what callers send (an inbound caller's peer
# metadata header, the Host of a request no route takes): past this, a new label set is counted in its
# reporter's all-"unknown" series instead, and in `weir_request_series_overflow_total`.
MAX_SERIES = 10_000


class RequestStats:
    """`istio_requests_total` and `istio_request_duration_milliseconds` for one proxy.

    `series` is keyed by (peer labels, code, flags). A peer tuple is made once per endpoint or caller and
    passed on every request, so `record` finds its series by the tuple's identity (`id`, the tuple pinned in
    the index so the id cannot be reused) and (code, flags): hashing the sixteen labels each request cost
    about 1,300 instructions, a hundredth of a proxied request."""

    __slots__ = ("series", "_by_peer", "overflowed")

    def __init__(self) -> None:
        self.series: dict[tuple, Series] = {}
        self._by_peer: dict[int, tuple[tuple, dict[tuple[int, str], Series]]] = {}
        self.overflowed = 0  # requests counted in an overflow series (MAX_SERIES)

    def record(self, peer: tuple, code: int, flags: str, duration_ms: float, request_bytes: int = 0,
               response_bytes: int = 0) -> None:
        indexed = self._by_peer.get(id(peer))
        if indexed is None:
            indexed = self._index(peer)
        series = indexed[1].get((code, flags))
        if series is None:
            series = self._series(peer, code, flags, indexed[1])
        series.count += 1
        series.total_ms += duration_ms
        series.buckets[_bucket(_DURATION_BOUNDS, duration_ms)] += 1
        if request_bytes:  # most requests have no body: the first bucket (le 1), without the search
            series.request_bytes += request_bytes
            series.request_sizes[_bucket(SIZE_BUCKETS, request_bytes)] += 1
        else:
            series.request_sizes[0] += 1
        series.response_bytes += response_bytes
        series.response_sizes[_bucket(SIZE_BUCKETS, response_bytes)] += 1

    def _index(self, peer: tuple) -> tuple[tuple, dict[tuple[int, str], Series]]:
        if len(self._by_peer) >= MAX_INDEXED_PEERS:
            self._by_peer.clear()
        indexed = self._by_peer[id(peer)] = (peer, {})
        return indexed

    def _series(self, peer: tuple, code: int, flags: str, by_response: dict[tuple[int, str], Series]) -> Series:
        """The series of (peer, code, flags), made when new; equal peer tuples of another identity share it."""
        key = (peer, code, flags)
        series = self.series.get(key)
        overflow = series is None and len(self.series) >= MAX_SERIES
        if overflow:
            # Counted in its reporter's all-"unknown" series (one per reporter, code and flags: a bounded set),
            # not indexed, so each such request comes here and is counted.
            self.overflowed += 1
            key = ((peer[0],) + (UNKNOWN,) * (len(peer) - 1), code, flags)
            series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        if not overflow:
            by_response[(code, flags)] = series
        return series

    def render(self) -> list[str]:
        lines = ["# TYPE istio_requests_total counter"]
        durations = ["# TYPE istio_request_duration_milliseconds histogram"]
        requests = ["# TYPE istio_request_bytes histogram"]
        responses = ["# TYPE istio_response_bytes histogram"]
        names = PEER_LABELS + DERIVED_LABELS + RESPONSE_LABELS
        for (peer, code, flags), series in sorted(self.series.items(), key=lambda item: str(item[0])):
            labels = label_text(names, (*peer, *derived_labels(peer), code, flags))
            lines.append(f"istio_requests_total{{{labels}}} {series.count}")
            _histogram(durations, "istio_request_duration_milliseconds", labels, DURATION_BUCKETS_MS,
                       series.buckets, series.count, f"{series.total_ms:.3f}")
            _histogram(requests, "istio_request_bytes", labels, SIZE_BUCKETS, series.request_sizes, series.count,
                       str(series.request_bytes))
            _histogram(responses, "istio_response_bytes", labels, SIZE_BUCKETS, series.response_sizes,
                       series.count, str(series.response_bytes))
        overflow = ["# TYPE weir_request_series_overflow_total counter",
                    f"weir_request_series_overflow_total {self.overflowed}"]
        return lines + durations + requests + responses + overflow


def _histogram(out: list[str], name: str, labels: str, bounds: tuple, counts: list[int], total: int,
               total_sum: str) -> None:
    running = 0
    for bound, count in zip(bounds, counts):
        running += count
        out.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}')
    out.append(f'{name}_bucket{{{labels},le="+Inf"}} {total}')
    out.append(f"{name}_sum{{{labels}}} {total_sum}")
    out.append(f"{name}_count{{{labels}}} {total}")


class TcpStats:
    """`istio_tcp_connections_opened_total` / `_closed_total` per peer tuple (PEER_LABELS order; TCP_LABELS
    when rendered)."""

    __slots__ = ("opened", "closed")

    def __init__(self) -> None:
        self.opened: dict[tuple, int] = {}
        self.closed: dict[tuple, int] = {}

    def open(self, labels: tuple) -> None:
        self.opened[labels] = self.opened.get(labels, 0) + 1

    def close(self, labels: tuple) -> None:
        self.closed[labels] = self.closed.get(labels, 0) + 1

    def render(self) -> list[str]:
        lines = []
        for name, table in (("istio_tcp_connections_opened_total", self.opened),
                            ("istio_tcp_connections_closed_total", self.closed)):
            lines.append(f"# TYPE {name} counter")
            for peer, count in sorted(table.items()):
                labels = label_text(TCP_LABELS, (*peer, *derived_labels(peer)[:-1], "-"))
                lines.append(f"{name}{{{labels}}} {count}")
        return lines


class Counters:
    """Named proxy-internal counters and gauges (pool, config, overflow...), rendered with a `weir_` prefix.

    An info gauge (`info`) is one series of value 1 whose labels say what is in force (the config version):
    setting it again replaces the labels, so the old series is gone from the next scrape."""

    __slots__ = ("values", "gauges", "infos")

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.gauges: dict[str, Callable[[], float]] = {}
        self.infos: dict[str, tuple[tuple[str, str], ...]] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.values[key] = self.values.get(key, 0) + amount

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self.gauges[name] = read

    def info(self, name: str, **labels: str) -> None:
        self.infos[name] = tuple(sorted(labels.items()))

    def render(self) -> list[str]:
        lines = []  # values as str(), not `:g`, which rounds a counter past six digits
        for (name, labels), value in sorted(self.values.items()):
            text = label_text((k for k, _ in labels), (v for _, v in labels))
            lines.append(f"weir_{name}{{{text}}} {value}" if text else f"weir_{name} {value}")
        for name, read in sorted(self.gauges.items()):
            lines.append(f"weir_{name} {read()}")
        for name, labels in sorted(self.infos.items()):
            lines.append(f"weir_{name}{{{label_text((k for k, _ in labels), (v for _, v in labels))}}} 1")
        return lines
