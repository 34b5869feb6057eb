"""Istio's standard metric label sets, as Istio documents and its proxies expose them: what Weir's metrics
are checked against (unit tests of mesh.proxy.stats, the end-to-end label check)."""

from __future__ import annotations

# "Istio Standard Metrics", Labels (istio.io/latest/docs/reference/config/metrics/): the HTTP metrics.
ISTIO_LABELS = frozenset({
    "reporter",
    "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_cluster", "source_canonical_service", "source_canonical_revision",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
    "destination_cluster", "destination_canonical_service", "destination_canonical_revision",
    "request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
})
# The TCP metrics carry the same labels but the HTTP answer's (istio/proxy's own expectations:
# testdata/metric/tcp_server_connection_open.yaml.tmpl, tcp_client_connection_open.yaml.tmpl).
ISTIO_TCP_LABELS = ISTIO_LABELS - {"response_code", "grpc_response_status"}
