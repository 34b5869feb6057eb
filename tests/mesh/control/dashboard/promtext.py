"""Prometheus text as a Weir proxy renders it (mesh.proxy.stats' label names and Istio's buckets), for the
dashboard tests: `render([Row(...), ...])`."""

from __future__ import annotations

from dataclasses import dataclass

BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


@dataclass(frozen=True)
class Row:
    reporter: str
    source: str
    destination: str
    count: int
    code: int = 200
    latency_ms: float = 3.0  # every request of the row took this long
    mtls: bool = True
    service: str = ""
    flags: str = "-"


def _version(workload: str) -> str:
    return workload.rpartition("-")[2] if "-" in workload else "unknown"


def render(rows: list[Row]) -> str:
    counts, histogram = ["# TYPE istio_requests_total counter"], ["# TYPE istio_request_duration_milliseconds histogram"]
    for r in rows:
        app = r.destination.rpartition("-")[0] or r.destination
        service = r.service or f"{app}.bookinfo.svc.cluster.local"
        policy = ("mutual_tls" if r.mtls else "none") if r.reporter == "destination" else "unknown"
        principal = "spiffe://cluster.local/ns/bookinfo/sa/x" if r.mtls else "unknown"
        labels = (f'reporter="{r.reporter}",source_workload="{r.source}",source_workload_namespace="bookinfo",'
                  f'source_app="x",source_version="{_version(r.source)}",destination_workload="{r.destination}",'
                  f'destination_workload_namespace="bookinfo",destination_app="{app}",'
                  f'destination_version="{_version(r.destination)}",destination_service="{service}",'
                  f'destination_service_name="{app}",destination_service_namespace="bookinfo",request_protocol="http",'
                  f'connection_security_policy="{policy}",source_principal="{principal}",'
                  f'destination_principal="{principal}",response_code="{r.code}",response_flags="{r.flags}"')
        counts.append(f"istio_requests_total{{{labels}}} {r.count}")
        for bound in BUCKETS:
            histogram.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="{bound}"}} '
                             f'{r.count if r.latency_ms <= bound else 0}')
        histogram.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="+Inf"}} {r.count}')
        histogram.append(f"istio_request_duration_milliseconds_count{{{labels}}} {r.count}")
    return "\n".join(counts + histogram + ["weir_pool_connections 3"]) + "\n"
