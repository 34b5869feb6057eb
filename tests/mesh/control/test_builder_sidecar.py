"""Istio-style simulation tests for sidecars: YAML + registry in, view out, which cluster a call hits."""

from __future__ import annotations

import pytest

from mesh.control import builder, registry, snapshot
from mesh.view import model, wire
from tests.mesh.control import simulate as sim
from tests.mesh.control.conftest import BOOKINFO, NS, fqdn, load, out, sidecar, snap, view

DR_SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: books, namespace: bookinfo}
spec:
  host: books
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def vs(http: str, host: str = "books", extra: str = "") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {host}, namespace: bookinfo}}
spec:
  hosts: [{host}]
{extra}  http:
{http}
"""


def test_default_route_without_virtual_service():
    v = view()
    for host in ("books", "books.bookinfo", "books.bookinfo.svc", fqdn("books")):
        assert sim.hit(v, 9080, host) == out("books")
    assert sim.weights(v, 9080, "books") == {out("books"): 100}
    assert [e.workload for e in sim.endpoints(v, out("books"))] == ["books-v1", "books-v2"]
    model.check_references(v)


def test_short_name_only_for_callers_in_the_same_namespace():
    v = view(proxy=sidecar("client-v1", ns="other"))
    assert sim.route(v, 9080, "books") is None
    assert sim.hit(v, 9080, "books.bookinfo") == out("books")
    assert sim.hit(v, 9080, fqdn("books")) == out("books")


def test_one_route_table_per_port_and_no_ports_in_domains():
    v = view()
    assert [t.name for t in v.route_tables] == ["9080"]
    domains = [d for t in v.route_tables for h in t.virtual_hosts for d in h.domains]
    assert not any(":" in d for d in domains)


def test_subset_route_and_subset_endpoints():
    v = view(DR_SUBSETS + "---" + vs("  - route: [{destination: {host: books, subset: v1}}]"))
    assert sim.hit(v, 9080, "books") == out("books", "v1")
    assert [e.workload for e in sim.endpoints(v, out("books", "v1"))] == ["books-v1"]
    assert [e.workload for e in sim.endpoints(v, out("books", "v2"))] == ["books-v2"]
    e = sim.endpoints(v, out("books", "v1"))[0]
    assert (e.address, e.port, e.app, e.version, e.namespace) == ("127.0.0.1", 21021, "books", "v1", NS)


@pytest.mark.parametrize("w1,w2", [(50, 50), (10, 90)])
def test_weights_are_carried(w1, w2):
    http = f"""  - route:
    - {{destination: {{host: books, subset: v1}}, weight: {w1}}}
    - {{destination: {{host: books, subset: v2}}, weight: {w2}}}"""
    v = view(DR_SUBSETS + "---" + vs(http))
    assert sim.weights(v, 9080, "books") == {out("books", "v1"): w1, out("books", "v2"): w2}


def test_first_matching_rule_wins_and_blocks_are_ored():
    http = """  - match:
    - headers: {end-user: {exact: jason}}
    - uri: {prefix: /v2}
    route: [{destination: {host: books, subset: v2}}]
  - match: [{uri: {prefix: /}}]
    route: [{destination: {host: books, subset: v1}}]
  - route: [{destination: {host: books}}]"""
    v = view(DR_SUBSETS + "---" + vs(http))
    assert sim.hit(v, 9080, "books", headers={"end-user": "jason"}) == out("books", "v2")
    assert sim.hit(v, 9080, "books", path="/v2/x") == out("books", "v2")
    assert sim.hit(v, 9080, "books", headers={"end-user": "bob"}) == out("books", "v1")


def test_source_labels_and_namespace_filter_at_build_time():
    http = """  - match: [{sourceLabels: {app: gw}}]
    route: [{destination: {host: books, subset: v2}}]
  - match: [{sourceNamespace: other}]
    route: [{destination: {host: books, subset: v1}}]"""
    text = DR_SUBSETS + "---" + vs(http)
    assert sim.hit(view(text, sidecar("gw-v1")), 9080, "books") == out("books", "v2")
    ui = view(text, sidecar("ui-v1"))
    assert [r.name for h in ui.route_tables[0].virtual_hosts if h.name.startswith("books") for r in h.routes] == [
        "default"
    ]  # both rules dropped for ui → the default route, as Istio
    other = view(text, sidecar("client-v1", ns="other"))
    assert sim.hit(other, 9080, "books.bookinfo") == out("books", "v1")


def test_match_on_another_port_is_dropped():
    http = """  - match: [{port: 8080}]
    route: [{destination: {host: books, subset: v2}}]
  - route: [{destination: {host: books, subset: v1}}]"""
    v = view(DR_SUBSETS + "---" + vs(http))
    assert sim.hit(v, 9080, "books") == out("books", "v1")


GATEWAY_ONLY = """  - route: [{destination: {host: books, subset: v2}}]"""


@pytest.mark.parametrize(
    "gateways,expected",
    [("[weir-system/ingress]", out("books")), ("[weir-system/ingress, mesh]", out("books", "v2")),
     ("[mesh]", out("books", "v2"))],
)
def test_virtual_service_binding_for_sidecars(gateways, expected):
    v = view(DR_SUBSETS + "---" + vs(GATEWAY_ONLY, extra=f"  gateways: {gateways}\n"))
    assert sim.hit(v, 9080, "books") == expected


def test_match_gateways_filters_blocks_for_sidecars():
    http = """  - match: [{gateways: [weir-system/ingress]}]
    route: [{destination: {host: books, subset: v2}}]
  - route: [{destination: {host: books, subset: v1}}]"""
    v = view(DR_SUBSETS + "---" + vs(http, extra="  gateways: [mesh, weir-system/ingress]\n"))
    assert sim.hit(v, 9080, "books") == out("books", "v1")


def test_route_actions_and_header_operations():
    http = """  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, redirectCode: 302}
  - match: [{uri: {prefix: /moved}}]
    redirect: {authority: books.example.com, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {prefix: /secure}}]
    redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - match: [{uri: {prefix: /api}, ignoreUriCase: true}]
    rewrite: {uri: /, authority: books.internal}
    headers:
      request: {set: {X-Rule: r}, remove: [cookie]}
    route:
    - destination: {host: books}
      headers: {response: {add: {x-dest: d}}}"""
    v = view(vs(http))
    r = sim.route(v, 9080, "books", path="/old/x")
    assert r.redirect == model.Redirect(uri="/new", status=302) and not r.clusters
    r = sim.route(v, 9080, "books", path="/moved")
    assert r.redirect == model.Redirect(authority="books.example.com", derive_port=model.FROM_REQUEST_PORT)
    r = sim.route(v, 9080, "books", path="/secure")
    assert r.redirect == model.Redirect(scheme="https", derive_port=model.FROM_PROTOCOL_DEFAULT)
    r = sim.route(v, 9080, "books", path="/teapot")
    assert r.direct_response == model.DirectResponse(418, "short and stout")
    r = sim.route(v, 9080, "books", path="/API/v")
    assert r.rewrite == model.Rewrite(uri="/", authority="books.internal")
    assert r.request_headers == model.HeaderOps(set=(("x-rule", "r"),), remove=("cookie",))
    assert r.clusters[0].response_headers == model.HeaderOps(add=(("x-dest", "d"),))


def test_destination_port_and_unknown_references_still_give_a_valid_view():
    reg = {**BOOKINFO, "services": BOOKINFO["services"] + [
        {"name": "multi", "namespace": NS, "ports": [{"name": "http", "port": 80}, {"name": "http-admin", "port": 81}],
         "selector": {"app": "multi"}}]}
    http = """  - match: [{uri: {prefix: /missing}}]
    route: [{destination: {host: nowhere.example.com}}]
  - match: [{uri: {prefix: /multi}}]
    route: [{destination: {host: multi}}]
  - route: [{destination: {host: books, subset: nosuch}}]"""
    v = view(vs(http), reg=reg)
    model.check_references(v)
    assert sim.hit(v, 9080, "books", path="/missing") == "outbound|9080||nowhere.example.com"
    assert sim.hit(v, 9080, "books", path="/multi") == out("multi", port=9080)  # several ports: the table's
    assert sim.hit(v, 9080, "books") == out("books", "nosuch")
    assert sim.endpoints(v, out("books", "nosuch")) == ()
    assert {t.name for t in v.route_tables} == {"80", "81", "9080"}


def test_endpoints_follow_registry_readiness():
    reg = {**BOOKINFO, "workloads": [dict(w, ready=w["name"] != "books-v2") for w in BOOKINFO["workloads"]]}
    v = view(DR_SUBSETS, reg=reg)
    assert [e.workload for e in sim.endpoints(v, out("books"))] == ["books-v1"]
    assert sim.endpoints(v, out("books", "v2")) == ()
    assert sim.cluster(v, out("books", "v2"))  # the cluster stays, empty


def test_outbound_policy():
    assert view().outbound_policy == "ALLOW_ANY"
    assert view(policy=snapshot.REGISTRY_ONLY).outbound_policy == "REGISTRY_ONLY"


def test_inbound_listener_to_the_local_app():
    v = view(proxy=sidecar("books-v1"))
    inbound = next(x for x in v.listeners if x.direction == model.INBOUND)
    # Named and numbered by the workload port policies use (books' targetPort), sent where the app listens.
    assert (inbound.port, inbound.cluster) == (20001, "inbound|9080||")
    (e,) = sim.endpoints(v, "inbound|9080||")
    assert (e.address, e.port, e.workload, e.version) == ("127.0.0.1", 20000, "books-v1", "v1")
    assert sim.cluster(v, "inbound|9080||").service == fqdn("books")
    assert sim.cluster(v, "inbound|9080||").port == 9080
    outbound = next(x for x in v.listeners if x.direction == model.OUTBOUND)
    assert outbound.port == 20002


def test_same_input_gives_identical_version():
    text = DR_SUBSETS + "---" + vs("  - route: [{destination: {host: books, subset: v1}}]")
    resources = load(text)
    reg = registry.parse_registry(BOOKINFO)
    reversed_reg = registry.parse_registry({k: list(reversed(v)) for k, v in BOOKINFO.items()})
    a = builder.build_proxy_view(snapshot.build_snapshot(resources, reg), sidecar())
    b = builder.build_proxy_view(snapshot.build_snapshot(list(reversed(resources)), reversed_reg), sidecar())
    assert a == b and wire.to_json(a) == wire.to_json(b) and wire.version_of(a) == wire.version_of(b)
    assert wire.from_dict(wire.to_dict(a)) == a


def test_wildcard_virtual_service_host_applies_to_service_entry_hosts():
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: bookinfo}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext, namespace: bookinfo}
spec:
  hosts: ["*.example.com"]
  http:
  - rewrite: {authority: api.example.com}
    route: [{destination: {host: api.example.com}}]
"""
    v = view(text)
    r = sim.route(v, 80, "api.example.com")
    assert r.rewrite.authority == "api.example.com"
    assert sim.hit(v, 80, "api.example.com") == "outbound|80||api.example.com"


def test_snapshot_indexes():
    s = snap(DR_SUBSETS + "---" + vs(GATEWAY_ONLY))
    assert list(s.virtual_services_by_host) == [fqdn("books")]
    assert list(s.destination_rules_by_host) == [fqdn("books")]
    assert [w.name for w in s.select_workloads(NS, {"app": "books"}, {"version": "v2"})] == ["books-v2"]
    assert s.services_by_host[fqdn("books")].resolution == snapshot.FROM_REGISTRY
