"""mesh.proxy.stats: the label sets of Istio's connection metrics, and info gauges that replace their series."""

from __future__ import annotations

from mesh.control.exposition import samples
from mesh.proxy import stats
from tests.istio_metrics import ISTIO_TCP_LABELS

GW = "spiffe://cluster.local/ns/bookinfo/sa/gw"
BOOKS = "spiffe://cluster.local/ns/bookinfo/sa/books"
# An inbound mTLS connection to books-v1 as runtime.tcp_labels builds it: the source is known by its
# certificate only.
INBOUND = ("destination", "unknown", "unknown", "unknown", "unknown", "books-v1", "bookinfo", "books", "v1",
           "books.bookinfo.svc.cluster.local", "books", "bookinfo", "tcp", "mutual_tls", GW, BOOKS)


def test_tcp_label_names_are_istios():
    assert set(stats.TCP_LABELS) == ISTIO_TCP_LABELS and len(stats.TCP_LABELS) == len(ISTIO_TCP_LABELS)


def test_tcp_metrics_render_istios_labels_with_derived_values():
    tcp = stats.TcpStats()
    tcp.open(INBOUND)
    tcp.open(INBOUND)
    tcp.close(INBOUND)
    found = {name: (labels, value) for name, labels, value in samples("\n".join(tcp.render()))}
    opened, count = found["istio_tcp_connections_opened_total"]
    assert count == 2 and found["istio_tcp_connections_closed_total"][1] == 1
    assert set(opened) == ISTIO_TCP_LABELS
    assert {k: opened[k] for k in ("source_workload", "source_canonical_service", "source_canonical_revision",
                                   "source_cluster", "source_principal")} == {
        "source_workload": "unknown", "source_canonical_service": "unknown", "source_canonical_revision": "latest",
        "source_cluster": "unknown", "source_principal": GW}  # as Istio's connections without metadata exchange
    assert (opened["destination_canonical_service"], opened["destination_canonical_revision"],
            opened["destination_cluster"]) == ("books", "v1", stats.CLUSTER_ID)
    assert (opened["request_protocol"], opened["response_flags"]) == ("tcp", "-")


def test_an_info_gauge_keeps_only_its_latest_series():
    counters = stats.Counters()
    counters.info("config_info", version="abc")
    assert counters.render() == ['weir_config_info{version="abc"} 1']
    counters.info("config_info", version="def")
    assert counters.render() == ['weir_config_info{version="def"} 1']
