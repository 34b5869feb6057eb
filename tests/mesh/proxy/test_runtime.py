"""The proxy's shared state: view swap, metric label sets and their bounds, config dump."""

from __future__ import annotations

import random
from dataclasses import replace
from types import SimpleNamespace

import pytest

from mesh.proxy import routing, runtime, stats
from mesh.proxy.matching import RequestHead
from mesh.view import model
from tests.mesh.proxy.fakes import APP, BOOKS, BOOKS_V1, GW, bookinfo_view, fqdn

OWN = "spiffe://cluster.local/ns/bookinfo/sa/gw"
CALLER = "spiffe://cluster.local/ns/weir-system/sa/istio-ingressgateway-service-account"


@pytest.fixture
def rt() -> runtime.ProxyRuntime:
    proxy_runtime = runtime.ProxyRuntime(GW, random.Random(1))
    proxy_runtime.apply(bookinfo_view(), "v1")
    return proxy_runtime


def test_apply_swaps_the_compiled_view_and_refuses_dangling_references(rt):
    old = rt.view
    new = rt.apply(bookinfo_view(books=(BOOKS_V1, BOOKS_V1)), "v2")
    assert rt.view is new and new is not old and new.version == "v2"
    with pytest.raises(model.ViewError):
        rt.apply(model.ProxyView(proxy="p", endpoints=(model.ClusterEndpoints("nope", ()),)), "v3")
    assert rt.view is new


@pytest.mark.parametrize("header, source, service", [
    (f"bookinfo;ui-v1;ui;v1;{fqdn('gw')}", ("ui-v1", "bookinfo", "ui", "v1"), (fqdn("gw"), "gw", "bookinfo")),
    # Not from a Weir proxy: unknown source, but the destination service is this workload's own.
    ("too;few", ("unknown",) * 4, (fqdn("gw"), "gw", "bookinfo")),
    (None, ("unknown",) * 4, (fqdn("gw"), "gw", "bookinfo")),
])
def test_inbound_peer_labels(rt, header, source, service):
    peer = rt._inbound_peer(header)
    assert peer[0] == "destination"
    assert (peer[1], peer[2], peer[3], peer[4]) == source
    assert peer[5:9] == ("gw-v1", "bookinfo", "gw", "v1")
    assert peer[9:12] == service


def test_label_caches_are_bounded(rt, monkeypatch):
    monkeypatch.setattr(runtime, "MAX_CACHED_PEERS", 8)
    for i in range(20):
        rt._inbound_peer(f"ns;w{i};a;v;s")
        endpoint = model.Endpoint(f"host{i}.example.com", 80)
        rt.peer_header(routing.Target(None, endpoint, None, None, ()))
        rt.source_peer(model.Cluster("PassthroughCluster", service=endpoint.address), endpoint)
    assert len(rt._inbound_peers) <= 8 and len(rt._peer_lines) <= 8 and len(rt._source_peers) <= 8
    endpoint = model.Endpoint("host19.example.com", 80)
    line = rt.peer_header(routing.Target(None, endpoint, None, None, ()))
    assert line == b"x-weir-peer: bookinfo;gw-v1;gw;v1;host19.example.com\r\n"


def test_local_peer_for_replies_before_a_cluster_is_chosen(rt):
    head = RequestHead("GET", "/", "reviews", 9080, [])
    assert rt.local_peer(model.OUTBOUND, head)[9] == "reviews"
    assert rt.local_peer(model.INBOUND, head)[0] == "destination"


def test_identity_defaults():
    identity = runtime.Identity("x.ns", "sidecar", "ns", "x")
    assert (identity.app, identity.version) == ("x", "unknown")


def test_config_dump_and_prometheus(rt):
    dump = rt.config_dump()
    assert dump["version"] == "v1" and dump["view"]["clusters"][0]["name"] == BOOKS and dump["pools"] == []
    assert runtime.ProxyRuntime(GW).config_dump()["view"] is None
    assert rt.prometheus().startswith("# TYPE istio_requests_total counter\n")


def test_a_rewrite_regex_python_cannot_compile_is_refused_not_fatal(rt):
    old = rt.view
    bad = model.Route("r", clusters=(model.WeightedCluster(old.spec.clusters[0].name),),
                      rewrite=model.Rewrite(uri_regex=("(unclosed", "/x")))
    table = model.RouteTable("9080", (model.VirtualHost("h", ("h",), (bad,)),))
    spec = model.ProxyView(proxy="p", route_tables=(table,), clusters=old.spec.clusters)
    with pytest.raises(model.ViewError, match="unclosed"):
        rt.apply(spec, "bad")
    assert rt.view is old


def test_a_header_value_http11_cannot_carry_is_refused_not_fatal(rt):
    """A NACK (ViewError), not a UnicodeEncodeError that the discovery client would retry forever."""
    old = rt.view
    ops = model.HeaderOps(set=(("x-mark", "\u2713"),))
    bad = model.Route("r", clusters=(model.WeightedCluster(old.spec.clusters[0].name, 100, ops),))
    table = model.RouteTable("9080", (model.VirtualHost("h", ("h",), (bad,)),))
    spec = model.ProxyView(proxy="p", route_tables=(table,), clusters=old.spec.clusters)
    with pytest.raises(model.ViewError, match="HTTP/1.1 header"):
        rt.apply(spec, "bad")
    assert rt.view is old


def test_inbound_connection_labels_name_this_workload_and_the_client_certificate(rt):
    rt.mesh_tls = SimpleNamespace(spiffe_id=OWN)
    labels = dict(zip(stats.PEER_LABELS, rt.tcp_labels(model.INBOUND, CALLER)))
    assert labels == {
        "reporter": "destination",
        # Weir learns the caller's workload per request (its peer header), never at connection time.
        "source_workload": "unknown", "source_workload_namespace": "unknown", "source_app": "unknown",
        "source_version": "unknown",
        "destination_workload": "gw-v1", "destination_workload_namespace": "bookinfo", "destination_app": "gw",
        "destination_version": "v1", "destination_service": fqdn("gw"), "destination_service_name": "gw",
        "destination_service_namespace": "bookinfo", "request_protocol": "tcp",
        "connection_security_policy": "mutual_tls", "source_principal": CALLER, "destination_principal": OWN,
    }
    plain = dict(zip(stats.PEER_LABELS, rt.tcp_labels(model.INBOUND)))
    assert (plain["connection_security_policy"], plain["source_principal"], plain["destination_principal"]) == (
        "none", "unknown", "unknown")


@pytest.mark.parametrize("direction", [model.OUTBOUND, model.GATEWAY])
def test_outbound_connection_labels_know_only_the_source(rt, direction):
    """One listener serves every destination: each request picks its own, the connection has none."""
    labels = dict(zip(stats.PEER_LABELS, rt.tcp_labels(direction, CALLER)))
    assert (labels["reporter"], labels["source_workload"], labels["source_workload_namespace"],
            labels["source_app"], labels["source_version"]) == ("source", "gw-v1", "bookinfo", "gw", "v1")
    unknown = {name for name, value in labels.items() if value == "unknown"}
    assert unknown == {name for name in stats.PEER_LABELS if name.startswith("destination_")} | {
        "source_principal", "connection_security_policy"}
    assert rt.tcp_labels(direction, CALLER) is rt.tcp_labels(direction, None)  # one cached tuple


def test_connection_labels_follow_the_view_and_are_bounded(rt, monkeypatch):
    assert rt.tcp_labels(model.INBOUND)[9] == fqdn("gw")
    clusters = tuple(replace(c, service=fqdn("gw2")) if c.name == APP else c for c in rt.view.spec.clusters)
    rt.apply(replace(rt.view.spec, clusters=clusters), "v2")
    assert rt.tcp_labels(model.INBOUND)[9] == fqdn("gw2")
    monkeypatch.setattr(runtime, "MAX_CACHED_PEERS", 8)
    for i in range(20):
        rt.tcp_labels(model.INBOUND, f"spiffe://cluster.local/ns/x/sa/a{i}")
    assert len(rt._tcp_labels) <= 8


def test_config_info_names_the_version_in_force_only(rt):
    assert 'weir_config_info{version="v1"} 1' in rt.prometheus().splitlines()
    rt.apply(bookinfo_view(), "v2")
    with pytest.raises(model.ViewError):
        rt.apply(model.ProxyView(proxy="p", endpoints=(model.ClusterEndpoints("nope", ()),)), "v3")
    info = [line for line in rt.prometheus().splitlines() if line.startswith("weir_config_info")]
    assert info == ['weir_config_info{version="v2"} 1']  # v1's series is gone, the NACKed v3 never shows


def test_an_overlong_peer_metadata_header_is_not_believed(rt):
    honest = rt.local_peer(model.INBOUND, RequestHead("GET", "/", "gw", 9080, [
        (b"x-weir-peer", b"bookinfo;ui-v1;ui;v1;ui.bookinfo.svc.cluster.local")], "http", ""))
    assert honest[1:5] == ("ui-v1", "bookinfo", "ui", "v1")
    spoofed = "bookinfo;" + "w" * runtime.MAX_PEER_HEADER + ";ui;v1;ui.bookinfo.svc.cluster.local"
    labels = rt.local_peer(model.INBOUND, RequestHead("GET", "/", "gw", 9080, [
        (b"x-weir-peer", spoofed.encode())], "http", ""))
    assert labels[1:5] == ("unknown",) * 4


def test_a_view_with_a_regex_re2_refuses_is_nacked_and_the_old_one_kept(rt):
    from tests.mesh.proxy.fakes import to

    before = rt.view
    bad = bookinfo_view(books_route=to(BOOKS, matches=(model.RouteMatch(uri=model.StringMatch("regex", "(?=x)")),)))
    with pytest.raises(model.ViewError, match="invalid regex: '\\(\\?=x\\)'"):
        rt.apply(bad, "v2")
    assert rt.view is before
