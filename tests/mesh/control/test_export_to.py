"""exportTo and namespace scope (YAML → view → which cluster a call from a proxy in namespace X hits).

Istio's semantics: exportTo unset or `*` → every namespace; `.` → the resource's own namespace; a name →
that namespace (not even the owner's unless listed); `~` → none. A DestinationRule must also be on the
lookup path (client namespace, service namespace, root namespace). A VirtualService's exportTo limits
gateway proxies by the proxy's namespace too. Security policies never cross namespaces: a policy of
namespace A selects workloads of A only, except from the root namespace.
"""

from __future__ import annotations

import pytest

import mesh.api as api
from mesh.control import snapshot
from mesh.view import security as view_security
from tests.mesh.control import simulate as sim
from tests.mesh.control.conftest import INGRESS, NS, fqdn, load, out, sidecar, view

ROOT = snapshot.ROOT_NAMESPACE
TEAM, THIRD = "team", "third"  # a namespace owning config, and one that only calls

# (exportTo as written, the caller namespaces that see a resource owned by `owner`)
EXPORTS = [
    pytest.param(None, {NS, TEAM, THIRD, ROOT}, id="unset"),
    pytest.param(["*"], {NS, TEAM, THIRD, ROOT}, id="star"),
    pytest.param(["."], {"owner"}, id="dot"),
    pytest.param(["~"], set(), id="tilde"),
    pytest.param([THIRD], {THIRD}, id="named"),
    pytest.param([".", THIRD], {"owner", THIRD}, id="dot-and-named"),
]
CALLERS = (NS, TEAM, THIRD)


def caller(ns: str):
    return sidecar("books-v1") if ns == NS else sidecar("c-v1", ns=ns)


def export_line(export_to: list[str] | None) -> str:
    return "" if export_to is None else f"  exportTo: {export_to}\n"


def sees(visible_to: set[str], owner: str, ns: str) -> bool:
    return ns in {owner if n == "owner" else n for n in visible_to}


SUBSETS = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: books, namespace: {NS}}}
spec:
  host: books
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
"""


def team_vs(export_to: list[str] | None, gateways: str = "") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: books-v2, namespace: {TEAM}}}
spec:
  hosts: [{fqdn("books")}]
{gateways}{export_line(export_to)}  http:
  - route: [{{destination: {{host: {fqdn("books")}, subset: v2}}}}]
---
"""


@pytest.mark.parametrize("ns", CALLERS)
@pytest.mark.parametrize(("export_to", "visible_to"), EXPORTS)
def test_virtual_service_routes_only_the_namespaces_it_is_exported_to(export_to, visible_to, ns):
    v = view(SUBSETS + team_vs(export_to), caller(ns))
    expected = out("books", "v2") if sees(visible_to, TEAM, ns) else out("books")
    assert sim.hit(v, 9080, fqdn("books")) == expected


@pytest.mark.parametrize("ns", CALLERS)
@pytest.mark.parametrize(("export_to", "visible_to"), EXPORTS)
def test_destination_rule_applies_only_where_exported(export_to, visible_to, ns):
    """In the service's namespace (on every caller's lookup path): its policy where exported."""
    rule = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: books-lb, namespace: {NS}}}
spec:
  host: books
{export_line(export_to)}  trafficPolicy: {{loadBalancer: {{simple: RANDOM}}}}
---
"""
    policy = sim.cluster(view(rule, caller(ns)), out("books")).lb.policy
    assert policy == ("RANDOM" if sees(visible_to, NS, ns) else "LEAST_REQUEST")


def test_destination_rule_exported_everywhere_applies_only_on_the_lookup_path():
    """A rule in a third namespace is not on the path of callers elsewhere, whatever its exportTo."""
    rule = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: books-lb, namespace: {TEAM}}}
spec:
  host: {fqdn("books")}
  exportTo: ["*"]
  trafficPolicy: {{loadBalancer: {{simple: RANDOM}}}}
---
"""
    assert sim.cluster(view(rule, caller(TEAM)), out("books")).lb.policy == "RANDOM"
    for ns in (NS, THIRD):
        assert sim.cluster(view(rule, caller(ns)), out("books")).lb.policy == "LEAST_REQUEST"
    in_root = rule.replace(f"namespace: {TEAM}", f"namespace: {ROOT}")
    assert sim.cluster(view(in_root, caller(THIRD)), out("books")).lb.policy == "RANDOM"


def service_entry(export_to: list[str] | None) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: {TEAM}}}
spec:
  hosts: [api.example.com]
{export_line(export_to)}  ports: [{{number: 80, name: http, protocol: HTTP}}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{{address: 10.0.0.7}}]
---
"""


@pytest.mark.parametrize("ns", CALLERS)
@pytest.mark.parametrize(("export_to", "visible_to"), EXPORTS)
def test_service_entry_is_a_host_only_where_exported(export_to, visible_to, ns):
    v = view(service_entry(export_to), caller(ns))
    if sees(visible_to, TEAM, ns):
        assert sim.hit(v, 80, "api.example.com") == "outbound|80||api.example.com"
        assert [e.address for e in sim.endpoints(v, "outbound|80||api.example.com")] == ["10.0.0.7"]
    else:
        assert sim.virtual_host(v, "80", "api.example.com") is None
        assert "outbound|80||api.example.com" not in {c.name for c in v.clusters}


def test_a_route_to_a_service_entry_not_exported_here_gets_no_endpoints():
    """A VirtualService of the caller's namespace cannot reach a host hidden from it (Istio: 503)."""
    detour = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: detour, namespace: {THIRD}}}
spec:
  hosts: [{fqdn("books")}]
  exportTo: ["."]
  http:
  - route: [{{destination: {{host: api.example.com, port: {{number: 80}}}}}}]
---
"""
    cluster = "outbound|80||api.example.com"
    hidden = view(service_entry(["."]) + detour, caller(THIRD))
    assert sim.hit(hidden, 9080, fqdn("books")) == cluster and sim.endpoints(hidden, cluster) == ()
    shared = view(service_entry([THIRD]) + detour, caller(THIRD))
    assert [e.address for e in sim.endpoints(shared, cluster)] == ["10.0.0.7"]


GATEWAY = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: public, namespace: {TEAM}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
---
"""


@pytest.mark.parametrize(("export_to", "applies"), [
    pytest.param(None, True, id="unset"),
    pytest.param(["."], False, id="dot: the gateway proxy runs in the root namespace"),
    pytest.param([ROOT], True, id="named-gateway-namespace"),
    pytest.param(["~"], False, id="tilde"),
])
def test_virtual_service_export_to_limits_gateway_proxies_by_their_namespace(export_to, applies):
    v = view(SUBSETS + GATEWAY + team_vs(export_to, f"  gateways: [{TEAM}/public]\n"), INGRESS)
    host = sim.virtual_host(v, "http.80", fqdn("books"))
    assert (host is not None and sim.hit(v, "http.80", fqdn("books")) == out("books", "v2")) is applies


def policy(kind: str, ns: str, spec: str) -> str:
    api = "security.istio.io/v1"
    return f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: p, namespace: {ns}}}\nspec: {spec}\n---\n"


SELECT_BOOKS = "{selector: {matchLabels: {app: books}}"


@pytest.mark.parametrize(("ns", "applies"), [(TEAM, False), (NS, True), (ROOT, True)])
def test_an_authorization_policy_never_selects_workloads_of_another_namespace(ns, applies):
    deny_all = policy("AuthorizationPolicy", ns, SELECT_BOOKS + "}")
    policies = view(deny_all, sidecar("books-v1")).security.policies
    assert [p.name for p in policies] == ([f"{ns}/p"] if applies else [])


@pytest.mark.parametrize(("ns", "applies"), [(TEAM, False), (NS, True), (ROOT, True)])
def test_a_peer_authentication_never_selects_workloads_of_another_namespace(ns, applies):
    strict = policy("PeerAuthentication", ns, "{mtls: {mode: STRICT}}")
    mode = view(strict, sidecar("books-v1")).security.mtls.mode
    assert mode == (view_security.STRICT if applies else view_security.PERMISSIVE)
    if ns != ROOT:  # with a selector matching the workload's labels, still only in its own namespace
        selected = policy("PeerAuthentication", ns, SELECT_BOOKS + ", mtls: {mode: STRICT}}")
        selected_mode = view(selected, sidecar("books-v1")).security.mtls.mode
        assert selected_mode == (view_security.STRICT if applies else view_security.PERMISSIVE)


@pytest.mark.parametrize("text", [team_vs(["."]), SUBSETS.replace("spec:\n", "spec:\n  exportTo: ['~']\n"),
                                  service_entry([THIRD])], ids=["VirtualService", "DestinationRule", "ServiceEntry"])
def test_export_to_is_not_reported_as_unenforced(text):
    (resource,) = load(text)
    assert resource.spec.export_to and api.unenforced_fields(resource) == []
