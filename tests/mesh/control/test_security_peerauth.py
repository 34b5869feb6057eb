"""PeerAuthentication → the proxy's inbound mTLS and the auto-mTLS flags of endpoints (YAML → view)."""

from __future__ import annotations

import copy

import pytest

from mesh.control import builder, security, snapshot
from mesh.view import model
from mesh.view import security as view_security
from tests.mesh.control import simulate as sim
from tests.mesh.control.conftest import BOOKINFO, INGRESS, NS, out, sidecar, snap, view

STRICT, PERMISSIVE, DISABLE = view_security.STRICT, view_security.PERMISSIVE, view_security.DISABLE
ROOT = snapshot.ROOT_NAMESPACE


def pa(name: str, ns: str = NS, mode: str | None = None, app: str | None = None,
       ports: dict[int, str] | None = None, created: str | None = None) -> str:
    lines = [
        "apiVersion: security.istio.io/v1",
        "kind: PeerAuthentication",
        f"metadata: {{name: {name}, namespace: {ns}"
        + (f", creationTimestamp: '{created}'" if created else "") + "}",
        "spec:",
    ]
    if app:
        lines.append(f"  selector: {{matchLabels: {{app: {app}}}}}")
    if mode:
        lines.append(f"  mtls: {{mode: {mode}}}")
    if ports:
        lines.append("  portLevelMtls:")
        lines += [f"    {port}: {{mode: {m}}}" for port, m in ports.items()]
    if len(lines) == 4:
        lines[-1] = "spec: {}"
    return "\n".join(lines) + "\n---\n"


def mtls(yaml_text: str, workload: str = "books-v1") -> model.InboundMtls:
    return view(yaml_text, sidecar(workload)).security.mtls


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param("", PERMISSIVE, id="no-policy-is-permissive"),
        pytest.param(pa("mesh", ROOT, "STRICT"), STRICT, id="mesh"),
        pytest.param(pa("mesh", ROOT), PERMISSIVE, id="mesh-without-mtls"),
        pytest.param(pa("mesh", ROOT, "STRICT") + pa("ns", NS, "DISABLE"), DISABLE, id="namespace-beats-mesh"),
        pytest.param(pa("mesh", ROOT, "STRICT") + pa("ns", NS, "UNSET"), STRICT, id="namespace-unset-inherits"),
        pytest.param(pa("ns", NS, "STRICT") + pa("books", NS, "PERMISSIVE", app="books"), PERMISSIVE,
                     id="workload-beats-namespace"),
        pytest.param(pa("mesh", ROOT, "DISABLE") + pa("ns", NS, "STRICT") + pa("books", NS, "UNSET", app="books"),
                     STRICT, id="workload-unset-inherits-namespace"),
        pytest.param(pa("mesh", ROOT, "STRICT") + pa("books", NS, app="books"), STRICT,
                     id="workload-without-mtls-inherits-mesh"),
        pytest.param(pa("ns", NS, "STRICT") + pa("ratings", NS, "DISABLE", app="ratings"), STRICT,
                     id="other-workload-selector-ignored"),
        pytest.param(pa("root-books", ROOT, "DISABLE", app="books") + pa("mesh", ROOT, "STRICT"), STRICT,
                     id="root-namespace-selector-ignored"),
        pytest.param(pa("other", "default", "DISABLE"), PERMISSIVE, id="other-namespace-ignored"),
    ],
)
def test_peer_authentication_precedence(config, expected):
    assert mtls(config) == model.InboundMtls(expected)


def test_oldest_policy_wins_at_each_level():
    newer = pa("a-newer", NS, "DISABLE", app="books", created="2024-06-01T00:00:00Z")
    older = pa("b-older", NS, "STRICT", app="books", created="2023-01-01T00:00:00Z")
    assert mtls(newer + older).mode == STRICT
    # without timestamps (local files) the name decides; a timestamped policy counts as older
    assert mtls(pa("b", NS, "STRICT", app="books") + pa("a", NS, "DISABLE", app="books")).mode == DISABLE
    assert mtls(pa("a", NS, "DISABLE") + pa("b", NS, "STRICT", created="2020-01-01T00:00:00Z")).mode == STRICT


def test_port_level_mtls_keyed_by_workload_port_and_unset_inherits():
    config = pa("ns", NS, "DISABLE") + pa("books", NS, "STRICT", app="books", ports={9080: "DISABLE", 9090: "UNSET"})
    assert mtls(config) == model.InboundMtls(STRICT, ((9080, DISABLE), (9090, STRICT)))
    inherited = pa("ns", NS, "STRICT") + pa("books", NS, "UNSET", app="books", ports={9080: "UNSET"})
    got = mtls(inherited)
    assert got == model.InboundMtls(STRICT, ((9080, STRICT),)) and got.mode_for(9080) == STRICT


def test_gateway_keeps_default_inbound_mtls():
    config = pa("mesh", ROOT, "STRICT")
    assert view(config, INGRESS).security.mtls == model.InboundMtls()
    assert view(config, INGRESS).security.trust_domain == "cluster.local"


def books_endpoints(config: str = "", proxy=None, cluster: str = out("books")) -> tuple[model.Endpoint, ...]:
    return sim.endpoints(view(config, proxy or sidecar("gw-v1")), cluster)


def test_registry_endpoints_carry_identity_and_auto_mtls():
    eps = books_endpoints()
    assert [(e.workload, e.identity, e.mtls) for e in eps] == [
        ("books-v1", "spiffe://cluster.local/ns/bookinfo/sa/books", True),
        ("books-v2", "spiffe://cluster.local/ns/bookinfo/sa/books", True),
    ]
    assert all(e.identity.endswith("/sa/books") for e in books_endpoints(proxy=INGRESS))  # gateways too


def test_a_workload_without_a_sidecar_gets_no_identity_and_plaintext():
    reg = copy.deepcopy(BOOKINFO)
    for workload in reg["workloads"]:
        if workload["name"] == "books-v2":
            workload["sidecar"] = False  # a pod outside the mesh (Kubernetes: no weir-proxy container)
    eps = sim.endpoints(view("", sidecar("gw-v1"), reg=reg), out("books"))
    assert [(e.workload, bool(e.identity), e.mtls) for e in eps] == [("books-v1", True, True),
                                                                      ("books-v2", False, False)]


@pytest.mark.parametrize(
    ("config", "v1_mtls", "v2_mtls"),
    [
        pytest.param(pa("ns", NS, "DISABLE"), False, False, id="namespace-disable"),
        pytest.param(pa("mesh", ROOT, "STRICT") + pa("v1", NS, "DISABLE", app="books"), False, False,
                     id="workload-disable"),
        pytest.param(pa("books", NS, "STRICT", app="books", ports={9080: "DISABLE"}), False, False,
                     id="port-level-disable-on-target-port"),
        pytest.param(pa("books", NS, "DISABLE", app="books", ports={9080: "PERMISSIVE"}), True, True,
                     id="port-level-enables"),
        pytest.param(pa("books", NS, "DISABLE", app="books", ports={9999: "STRICT"}), False, False,
                     id="other-port-irrelevant"),
        pytest.param(pa("ratings", NS, "DISABLE", app="ratings"), True, True, id="other-workload"),
    ],
)
def test_destination_peer_authentication_sets_endpoint_mtls(config, v1_mtls, v2_mtls):
    assert [e.mtls for e in books_endpoints(config)] == [v1_mtls, v2_mtls]


def test_endpoint_mtls_uses_the_target_port_not_the_service_port():
    reg = {**BOOKINFO, "services": [
        {**s, "ports": [{"name": "http", "port": 80, "targetPort": 9080}]} if s["name"] == "books" else s
        for s in BOOKINFO["services"]
    ]}
    config = pa("books", NS, "STRICT", app="books", ports={9080: "DISABLE", 80: "STRICT"})
    eps = sim.endpoints(view(config, sidecar("gw-v1"), reg=reg), out("books", port=80))
    assert [e.mtls for e in eps] == [False, False]


SERVICE_ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: bookinfo}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: books-alias, namespace: bookinfo}
spec:
  hosts: [books.internal]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: books}}
---
"""


def test_service_entry_endpoints_have_no_sidecar_unless_selected_workloads():
    v = view(SERVICE_ENTRY + pa("ns", NS, "STRICT"), sidecar("gw-v1"))
    (ext,) = sim.endpoints(v, "outbound|443||api.example.com")
    assert (ext.identity, ext.mtls) == ("", False)
    selected = sim.endpoints(v, "outbound|9080||books.internal")
    assert [(e.workload, e.mtls) for e in selected] == [("books-v1", True), ("books-v2", True)]
    assert all(e.identity == "spiffe://cluster.local/ns/bookinfo/sa/books" for e in selected)


@pytest.mark.parametrize("location", [None, "MESH_EXTERNAL", "MESH_INTERNAL"])
@pytest.mark.parametrize("selected", [True, False], ids=["workload-selector", "inline-endpoints"])
def test_only_mesh_internal_service_entries_get_auto_mtls(location, selected):
    """Istio: no auto mTLS to a MESH_EXTERNAL service (the default location), even when the workloads it
    selects run sidecars that accept mTLS; MESH_INTERNAL selected workloads are in the mesh. Inline
    endpoints never have a sidecar."""
    entry = SERVICE_ENTRY.split("---")[1].replace("  location: MESH_INTERNAL\n", "")
    if location:
        entry = entry.replace("  resolution:", f"  location: {location}\n  resolution:")
    if not selected:
        entry = entry.replace("workloadSelector: {labels: {app: books}}", "endpoints: [{address: 10.0.0.9}]")
    eps = sim.endpoints(view(entry + "---\n" + pa("ns", NS, "STRICT"), sidecar("gw-v1")),
                        "outbound|9080||books.internal")
    expected = selected and location == "MESH_INTERNAL"
    assert eps and [e.mtls for e in eps] == [expected] * len(eps)


def test_a_destination_rule_still_originates_istio_mutual_to_a_mesh_external_entry():
    entry = SERVICE_ENTRY.split("---")[1].replace("  location: MESH_INTERNAL\n", "")
    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: books-internal, namespace: bookinfo}
spec:
  host: books.internal
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
"""
    v = view(entry + "---\n" + dr, sidecar("gw-v1"))
    (cluster,) = [c for c in v.clusters if c.name == "outbound|9080||books.internal"]
    assert cluster.tls is not None and cluster.tls.mode == view_security.TLS_ISTIO_MUTUAL
    assert [e.mtls for e in sim.endpoints(v, cluster.name)] == [False, False]  # auto mTLS stays off


def test_trust_domain_and_root_namespace_are_settings():
    settings = snapshot.MeshSettings(root_namespace="mesh-root", trust_domain="example.org")
    resources = snap(pa("mesh", "mesh-root", "STRICT") + pa("weir", ROOT, "DISABLE")).resources
    s = snapshot.build_snapshot(resources, snap().registry, settings=settings)
    v = builder.build_proxy_view(s, sidecar("gw-v1"))
    assert v.security.mtls.mode == STRICT and v.security.trust_domain == "example.org"
    assert sim.endpoints(v, out("books"))[0].identity == "spiffe://example.org/ns/bookinfo/sa/books"


def test_workload_mtls_is_composed_once_per_snapshot():
    s = snap(pa("books", NS, "DISABLE", app="books"))
    assert s.workload_mtls[(NS, "books-v1")] == model.InboundMtls(DISABLE)
    assert s.workload_mtls[(NS, "ratings-v1")] is security.DEFAULT_MTLS
