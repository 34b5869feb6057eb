"""mesh.proxy.stats: the label sets of Istio's connection metrics, and info gauges that replace their series."""

from __future__ import annotations

import gc

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


def peer(workload: str) -> tuple:
    return ("destination", "unknown", "unknown", "unknown", "unknown", workload, "bookinfo", "books", "v1",
            "books.bookinfo.svc.cluster.local", "books", "bookinfo", "http", "none", "unknown", "unknown")


def test_equal_peer_tuples_of_another_identity_count_in_one_series():
    requests = stats.RequestStats()
    first, second = peer("books-v1"), tuple(list(peer("books-v1")))
    assert first == second and first is not second
    for labels in (first, second, first):
        requests.record(labels, 200, "-", 1.0, 0, 1024)
    requests.record(first, 503, "UO", 1.0)
    assert {key[1:]: series.count for key, series in requests.series.items()} == {(200, "-"): 3, (503, "UO"): 1}
    assert requests.series[(first, 200, "-")].response_sizes[4] == 3  # 1024 bytes: the (1000, 10000] bucket


def test_a_peer_tuple_gone_cannot_lend_its_series_to_a_new_one_at_the_same_address_in_memory():
    """The index names a peer tuple by id(); a tuple freed while indexed could hand its id to the next one,
    and its series with it. The index keeps its tuples alive instead (a series' key keeps only the first of
    equal tuples alive: each view push makes equal ones)."""
    requests = stats.RequestStats()
    for i in range(50):
        requests.record(peer("w"), 200, "-", 1.0)  # a new tuple equal to the last, dropped right after
        gc.collect()
        requests.record(peer(f"x{i}"), 200, "-", 1.0)
    counts = {key[0][5]: series.count for key, series in requests.series.items()}
    assert counts == {"w": 50, **{f"x{i}": 1 for i in range(50)}}


def test_the_peer_index_is_bounded_and_series_survive_its_clearing(monkeypatch):
    monkeypatch.setattr(stats, "MAX_INDEXED_PEERS", 4)
    requests = stats.RequestStats()
    kept = [peer(f"w{i}") for i in range(10)]
    for _ in range(3):
        for labels in kept:
            requests.record(labels, 200, "-", 1.0)
            assert len(requests._by_peer) <= 4
    assert [series.count for series in requests.series.values()] == [3] * 10


def test_durations_fall_in_istios_buckets_at_their_bounds():
    requests = stats.RequestStats()
    for duration_ms in (0.5, 0.6, 1, 300000, 4000000):
        requests.record(peer("w"), 200, "-", duration_ms)
    buckets = requests.series[(peer("w"), 200, "-")].buckets
    assert buckets[0] == 1 and buckets[1] == 2 and buckets[15] == 1 and buckets[-1] == 1


def test_label_sets_past_the_bound_are_counted_in_one_unknown_series_per_reporter(monkeypatch):
    """Callers choose some labels (an inbound caller's peer metadata): their label sets cannot grow the
    series, the memory and the scrape without bound."""
    monkeypatch.setattr(stats, "MAX_SERIES", 5)
    requests = stats.RequestStats()
    for i in range(50):
        requests.record(peer(f"spoofed-{i}"), 200, "-", 1.0)
    requests.record(peer("spoofed-0"), 200, "-", 1.0)  # one that got a series before the bound keeps it
    assert len(requests.series) == 6 and requests.overflowed == 45
    overflow = requests.series[(("destination",) + ("unknown",) * 15, 200, "-")]
    assert overflow.count == 45 and requests.series[(peer("spoofed-0"), 200, "-")].count == 2
    assert "weir_request_series_overflow_total 45" in requests.render()
