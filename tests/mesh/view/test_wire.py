"""The view's JSON wire form: lossless round trip, stable content-hash version, strict decoding."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from mesh.view import model, wire

S = model.StringMatch


def full_view() -> model.ProxyView:
    """A view that uses every type and optional field of the model."""
    books = "outbound|9080|v1|books.bookinfo.svc.cluster.local"
    ops = model.HeaderOps(set=(("x-a", "1"),), add=(("x-b", "2"),), remove=("x-c",))
    match = model.RouteMatch(
        uri=S("prefix", "/books"), scheme=S("exact", "http"), method=S("regex", "GET|HEAD"),
        authority=S("exact", "books", ignore_case=True),
        headers=(model.KeyMatch("end-user", S("exact", "jason")), model.KeyMatch("x-debug", invert=True)),
        query_params=(model.KeyMatch("v"),), port=9080)
    routes = (
        model.Route("weighted", (match,), (model.WeightedCluster(books, 90, ops, ops),
                                           model.WeightedCluster(model.PASSTHROUGH_CLUSTER, 10)),
                    rewrite=model.Rewrite(uri="/v2", authority="b", uri_regex=("^/x(.*)$", r"/y\1")),
                    request_headers=ops, response_headers=ops),
        model.Route("moved", redirect=model.Redirect("/new", "elsewhere", 8080, "https", 308)),
        model.Route("teapot", direct_response=model.DirectResponse(418, "short and stout")),
    )
    lb = model.LoadBalancer("RING_HASH", hash_cookie="user", hash_cookie_path="/", hash_cookie_ttl=60.5,
                            ring_size=2048)
    return model.ProxyView(
        proxy="books-v1.bookinfo",
        listeners=(model.Listener("http.80", model.GATEWAY, 80, route_table="http.80"),
                   model.Listener("in", model.INBOUND, 15006, cluster=books)),
        route_tables=(model.RouteTable("http.80", (model.VirtualHost("books", ("books", "*.example.com", "*"),
                                                                     routes),)),),
        clusters=(model.Cluster(books, model.EDS, "books.bookinfo.svc.cluster.local", 9080, "v1", lb),
                  model.Cluster("ext", model.DNS, "api.example.com", 443)),
        endpoints=(model.ClusterEndpoints(books, (model.Endpoint("10.0.0.1", 9080, "books-v1", "bookinfo", "books",
                                                                 "v1", 3),)),),
        outbound_policy="REGISTRY_ONLY",
    )


@pytest.mark.parametrize("view", [full_view(), model.ProxyView(proxy="empty")], ids=["full", "empty"])
def test_round_trip_is_equal(view):
    decoded = wire.from_dict(json.loads(wire.to_json(view)))
    assert decoded == view
    assert wire.version_of(decoded) == wire.version_of(view)
    assert wire.to_json(decoded) == wire.to_json(view)


def test_round_trip_restores_tuples_and_floats():
    data = json.loads(wire.to_json(full_view()))
    data["clusters"][0]["lb"]["hash_cookie_ttl"] = 60  # JSON may carry an integral float as an int
    decoded = wire.from_dict(data)
    assert isinstance(decoded.clusters[0].lb.hash_cookie_ttl, float)
    assert isinstance(decoded.route_tables[0].virtual_hosts[0].routes[0].rewrite.uri_regex, tuple)
    hash(decoded)  # frozen all the way down: usable as a dict key / change detector


def test_version_is_a_stable_content_hash():
    view = model.ProxyView(proxy="p", listeners=(model.Listener("out", model.OUTBOUND, 15001),))
    # Pinned: proxies and every control-plane replica must compute the same version for the same view.
    assert wire.version_of(view) == wire.version_of(copy.deepcopy(view))
    assert wire.to_json(view) == (
        b'{"clusters":[],"endpoints":[],"listeners":[{"cluster":null,"direction":"outbound","https_redirect":false,'
        b'"name":"out","port":15001,"route_table":null,"tls":[]}],"outbound_policy":"ALLOW_ANY","proxy":"p",'
        b'"route_tables":[],"security":{"jwt_rules":[],"mtls":{"mode":"PERMISSIVE","port_modes":[]},"policies":[],'
        b'"trust_domain":"cluster.local"}}')
    assert wire.version_of(view) == hashlib.sha256(wire.to_json(view)).hexdigest()[:16]
    changed = model.ProxyView(proxy="p", listeners=(model.Listener("out", model.OUTBOUND, 15002),))
    assert wire.version_of(changed) != wire.version_of(view)


def mutate(path: list, value=None, delete: bool = False) -> dict:
    data = json.loads(wire.to_json(full_view()))
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


ROUTE = ["route_tables", 0, "virtual_hosts", 0, "routes", 0]


@pytest.mark.parametrize("data, message", [
    (mutate(["surprise"], 1), "view: unknown field(s) ['surprise']"),
    (mutate([*ROUTE, "matches", 0, "uri", "flavour"], "x"), "unknown field(s) ['flavour']"),
    (mutate(["listeners", 0, "port"], "80"), "view.listeners[0].port: expected int, got str"),
    (mutate(["listeners", 0, "port"], True), "expected int, got bool"),
    (mutate(["listeners", 0, "port"], 80.5), "expected int, got float"),
    (mutate(["listeners", 0, "name"], None), "view.listeners[0].name: expected str, got NoneType"),
    (mutate(["listeners"], {"a": 1}), "view.listeners: expected a list"),
    (mutate(["listeners", 0], ["a"]), "view.listeners[0]: expected an object"),
    (mutate([*ROUTE, "matches", 0, "uri", "ignore_case"], "yes"), "expected bool, got str"),
    (mutate([*ROUTE, "rewrite", "uri_regex"], ["a", "b", "c"]), "uri_regex: expected 2 items"),
    (mutate(["clusters", 0, "lb", "hash_cookie_ttl"], "60"), "expected float, got str"),
    (mutate(["listeners", 0, "port"], delete=True), "view.listeners[0]"),
    (None, "view: expected an object"),
    ([], "view: expected an object"),
])
def test_payloads_that_do_not_fit_the_model_are_view_errors(data, message):
    with pytest.raises(model.ViewError) as caught:
        wire.from_dict(data)
    assert message in str(caught.value)


@pytest.mark.parametrize("path, value, message", [
    ([*ROUTE, "clusters", 0, "cluster"], "outbound|9080|v9|books", "unknown cluster outbound|9080|v9|books"),
    (["listeners", 0, "route_table"], "http.8080", "unknown route table http.8080"),
    (["listeners", 1, "cluster"], "nope", "listener in: unknown cluster nope"),
    (["endpoints", 0, "cluster"], "gone", "endpoints for unknown cluster gone"),
])
def test_dangling_references_are_view_errors(path, value, message):
    with pytest.raises(model.ViewError, match=message):
        wire.from_dict(mutate(path, value))


def test_well_known_clusters_need_no_definition():
    data = mutate([*ROUTE, "clusters", 0, "cluster"], model.BLACKHOLE_CLUSTER)
    assert wire.from_dict(data).route_tables[0].virtual_hosts[0].routes[0].clusters[0].cluster == "BlackHoleCluster"
