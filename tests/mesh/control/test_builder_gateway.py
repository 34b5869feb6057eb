"""Gateway proxies: Gateway servers → listeners; bound VirtualServices → domains and routes."""

from __future__ import annotations

from mesh.control import node
from mesh.view import model
from tests.mesh.control import simulate as sim
from tests.mesh.control.conftest import INGRESS, out, sidecar, view

GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: api, namespace: weir-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["bookinfo/*.example.com"]
  - port: {number: 8081, name: http2, protocol: HTTP2}
    hosts: ["*/api.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {prefix: /gateway/}}]
    route: [{destination: {host: gw, port: {number: 9080}}}]
  - match: [{uri: {prefix: /}}]
    route: [{destination: {host: ui}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: books-api, namespace: bookinfo}
spec:
  hosts: [books.example.com, api.example.com]
  gateways: [weir-system/api, mesh]
  http:
  - match: [{gateways: [mesh]}]
    route: [{destination: {host: ratings}}]
  - route: [{destination: {host: books}}]
---
"""


def test_gateway_listeners_merge_servers_and_ignore_non_http():
    v = view(GATEWAY, INGRESS)
    assert [(x.name, x.direction, x.port, x.route_table) for x in v.listeners] == [
        ("http.80", model.GATEWAY, 80, "http.80"),
        ("http.8081", model.GATEWAY, 8081, "http.8081"),
    ]
    assert [t.name for t in v.route_tables] == ["http.80", "http.8081"]
    model.check_references(v)


def test_gateway_routes_by_domain_intersection():
    v = view(GATEWAY, INGRESS)
    assert sim.hit(v, "http.80", "anything.local", path="/gateway/books") == out("gw")
    assert sim.hit(v, "http.80", "anything.local", path="/") == out("ui")
    # *.example.com on the api server meets books.example.com; the match block for mesh is dropped
    assert sim.hit(v, "http.80", "books.example.com") == out("books")
    assert sim.virtual_host(v, "http.80", "books.example.com").domains == ("books.example.com",)
    # port 8081 only takes api.example.com (its server host), not books.example.com
    assert sim.hit(v, "http.8081", "api.example.com") == out("books")
    assert sim.virtual_host(v, "http.8081", "books.example.com") is None
    assert sim.endpoints(v, out("gw"))  # gateways get clusters and endpoints too


def test_gateway_not_selected():
    other = node.make_node("other-gw", "gateway", "weir-system", "other", {"istio": "egressgateway"})
    v = view(GATEWAY, other)
    assert v.listeners == () and v.route_tables == ()


def test_sidecar_sees_the_mesh_binding_only():
    v = view(GATEWAY, sidecar())
    assert sim.route(v, 9080, "books.example.com") is None  # not a service: no virtual host
    assert sim.hit(v, 9080, "ui") == out("ui")  # gateway-only VS does not apply in the mesh


def test_server_host_namespace_restricts_virtual_services():
    text = GATEWAY.replace("bookinfo/*.example.com", "other/*.example.com")
    v = view(text, INGRESS)
    assert sim.virtual_host(v, "http.80", "books.example.com").name == "*:80"  # falls to the * VS
