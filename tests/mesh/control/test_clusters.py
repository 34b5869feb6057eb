"""DestinationRule lookup and traffic policy → clusters; ServiceEntry resolutions → cluster kinds/endpoints."""

from __future__ import annotations

import pytest

from mesh.view import model
from tests.mesh.control import simulate as sim
from tests.mesh.control.conftest import out, sidecar, view


def dr(ns: str, host: str, body: str, name: str = "books") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}}}
spec:
  host: {host}
{body}
---
"""


def lb(v: model.ProxyView, name: str) -> model.LoadBalancer:
    return sim.cluster(v, name).lb


def test_default_load_balancer_is_least_request():
    assert lb(view(), out("books")).policy == "LEAST_REQUEST"


@pytest.mark.parametrize(
    "simple,policy",
    [("ROUND_ROBIN", "ROUND_ROBIN"), ("LEAST_REQUEST", "LEAST_REQUEST"), ("LEAST_CONN", "LEAST_REQUEST"),
     ("RANDOM", "RANDOM")],
)
def test_simple_load_balancers(simple, policy):
    v = view(dr("bookinfo", "books", f"  trafficPolicy: {{loadBalancer: {{simple: {simple}}}}}"))
    assert lb(v, out("books")) == model.LoadBalancer(policy=policy)


def test_passthrough_load_balancer_makes_a_passthrough_cluster():
    v = view(dr("bookinfo", "books", "  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}"))
    assert sim.cluster(v, out("books")).kind == model.PASSTHROUGH


def test_subset_policy_overrides_top_level_and_port_level_settings_apply():
    body = """  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
      portLevelSettings:
      - {port: {number: 9080}, loadBalancer: {simple: LEAST_REQUEST}}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}"""
    v = view(dr("bookinfo", "books", body))
    assert lb(v, out("books")).policy == "ROUND_ROBIN"
    assert lb(v, out("books", "v1")).policy == "ROUND_ROBIN"
    assert lb(v, out("books", "v2")).policy == "LEAST_REQUEST"
    assert lb(v, out("books", "v3")).policy == "RANDOM"
    assert sim.endpoints(v, out("books", "v3")) == ()


def test_consistent_hash_mapping():
    cases = {
        "{httpHeaderName: End-User}": model.LoadBalancer("RING_HASH", hash_header="end-user"),
        "{httpCookie: {name: user, path: /, ttl: 10s}, ringHash: {minimumRingSize: 2048}}": model.LoadBalancer(
            "RING_HASH", hash_cookie="user", hash_cookie_path="/", hash_cookie_ttl=10.0, ring_size=2048),
        "{useSourceIp: true, minimumRingSize: 64}": model.LoadBalancer("RING_HASH", hash_source_ip=True, ring_size=64),
        "{httpQueryParameterName: q}": model.LoadBalancer("RING_HASH", hash_query_parameter="q"),
        "{httpCookie: {name: u, ttl: 0s, attributes: [{name: SameSite, value: Strict}, {name: Secure}]}}":
            model.LoadBalancer("RING_HASH", hash_cookie="u", hash_cookie_ttl=0.0,
                               hash_cookie_attributes=(("SameSite", "Strict"), ("Secure", ""))),
    }
    for spec, expected in cases.items():
        v = view(dr("bookinfo", "books", f"  trafficPolicy: {{loadBalancer: {{consistentHash: {spec}}}}}"))
        assert lb(v, out("books")) == expected, spec


def test_destination_rule_in_the_callers_namespace_wins():
    text = (
        dr("bookinfo", "books", "  trafficPolicy: {loadBalancer: {simple: RANDOM}}")
        + dr("other", "books.bookinfo.svc.cluster.local", "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}")
        + dr("third", "books.bookinfo.svc.cluster.local", "  trafficPolicy: {loadBalancer: {simple: LEAST_CONN}}")
    )
    assert lb(view(text, sidecar("gw-v1")), out("books")).policy == "RANDOM"  # service namespace
    assert lb(view(text, sidecar("client-v1", ns="other")), out("books")).policy == "ROUND_ROBIN"
    assert lb(view(text, sidecar("client-v1", ns="fourth")), out("books")).policy == "RANDOM"


def test_exact_host_beats_wildcard_and_most_specific_wildcard_wins():
    text = (
        dr("bookinfo", "'*.bookinfo.svc.cluster.local'", "  trafficPolicy: {loadBalancer: {simple: RANDOM}}", "all")
        + dr("bookinfo", "'*.svc.cluster.local'", "  trafficPolicy: {loadBalancer: {simple: LEAST_CONN}}", "any")
        + dr("bookinfo", "books", "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}")
    )
    v = view(text)
    assert lb(v, out("books")).policy == "ROUND_ROBIN"
    assert lb(v, out("ratings")).policy == "RANDOM"


def test_root_namespace_rule_is_the_fallback():
    text = dr("weir-system", "'*.svc.cluster.local'", "  trafficPolicy: {loadBalancer: {simple: RANDOM}}", "mesh")
    assert lb(view(text), out("books")).policy == "RANDOM"


def test_rules_for_the_same_host_merge_subsets():
    text = dr("bookinfo", "books", "  subsets: [{name: v1, labels: {version: v1}}]", "a") + dr(
        "bookinfo", "books", "  subsets: [{name: v2, labels: {version: v2}}]", "b")
    names = {c.name for c in view(text).clusters}
    assert {out("books", "v1"), out("books", "v2")} <= names


def se(body: str, name: str = "ext") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: bookinfo}}
spec:
{body}
---
"""


def test_service_entry_static():
    text = se("""  hosts: [db.internal.example.com]
  ports: [{number: 5000, name: http, protocol: HTTP, targetPort: 5001}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, ports: {http: 6000}, labels: {version: v2}, weight: 3}""") + dr(
        "bookinfo", "db.internal.example.com", "  subsets: [{name: v2, labels: {version: v2}}]", "db")
    v = view(text)
    name = "outbound|5000||db.internal.example.com"
    assert sim.cluster(v, name).kind == model.EDS
    assert [(e.address, e.port, e.weight) for e in sim.endpoints(v, name)] == [("10.0.0.1", 5001, 1),
                                                                                ("10.0.0.2", 6000, 3)]
    assert [e.address for e in sim.endpoints(v, "outbound|5000|v2|db.internal.example.com")] == ["10.0.0.2"]
    assert sim.hit(v, 5000, "db.internal.example.com") == name


def test_service_entry_static_with_workload_selector():
    text = se("""  hosts: [ratings.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}""")
    v = view(text)
    assert [e.workload for e in sim.endpoints(v, "outbound|80||ratings.example.com")] == ["ratings-v1", "ratings-v2"]


def test_service_entry_dns():
    text = se("""  hosts: [api.example.com, www.example.com]
  ports: [{number: 443, name: https, protocol: HTTP}]
  resolution: DNS""") + se("""  hosts: [mirror.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  endpoints: [{address: backend.example.net}]""", "mirror")
    v = view(text)
    c = sim.cluster(v, "outbound|443||api.example.com")
    assert c.kind == model.DNS and c.service == "api.example.com"
    assert [(e.address, e.port) for e in sim.endpoints(v, "outbound|443||www.example.com")] == [("www.example.com", 443)]
    assert [e.address for e in sim.endpoints(v, "outbound|80||mirror.example.com")] == ["backend.example.net"]
    assert sim.virtual_host(v, "443", "api.example.com").domains == ("api.example.com",)


def test_service_entry_none_is_passthrough():
    text = se("""  hosts: ["*.googleapis.com"]
  ports: [{number: 80, name: http, protocol: HTTP}]
  location: MESH_EXTERNAL
  resolution: NONE""")
    v = view(text)
    name = "outbound|80||*.googleapis.com"
    assert sim.cluster(v, name).kind == model.PASSTHROUGH
    assert sim.hit(v, 80, "storage.googleapis.com") == name
    assert sim.endpoints(v, name) == ()


def test_service_entry_export_to_namespace():
    text = se("""  hosts: [private.example.com]
  exportTo: ["."]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS""")
    assert sim.virtual_host(view(text), "80", "private.example.com") is not None
    assert sim.virtual_host(view(text, sidecar("c-v1", ns="other")), "80", "private.example.com") is None
