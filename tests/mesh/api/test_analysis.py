"""Cross-resource analysis (IST0101, IST0109), unenforced-field warnings and host resolution."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mesh.api import (
    ENFORCED,
    KINDS,
    ConfigError,
    Message,
    analyze,
    fqdn,
    load_document,
    load_text,
    unenforced_fields,
)
from tests.mesh.api.conftest import doc, dr, gw, route_to, se, to_yaml, vs


def _dr(host: str, subsets: list[str], namespace: str = "bookinfo", name: str = "reviews") -> dict:
    return doc(
        "DestinationRule",
        {"host": host, "subsets": [{"name": s, "labels": {"version": s}} for s in subsets]},
        name=name,
        namespace=namespace,
    )


def _codes(messages: list[Message], code: str) -> list[Message]:
    return [m for m in messages if m.code == code]


@pytest.mark.parametrize(
    ("dr_host", "dr_ns"),
    [
        ("reviews", "bookinfo"),
        ("reviews.bookinfo", "other"),
        ("reviews.bookinfo.svc.cluster.local", "other"),
    ],
)
def test_subset_defined_by_destination_rule_is_found(dr_host: str, dr_ns: str) -> None:
    resources = load_text(to_yaml(vs([{"route": [route_to(subset="v1")]}]), _dr(dr_host, ["v1"], dr_ns)))
    assert _codes(analyze(resources), "IST0101") == []


@pytest.mark.parametrize(
    ("resources", "missing"),
    [
        ([vs([{"route": [route_to(subset="v3")]}]), _dr("reviews", ["v1", "v2"])], "reviews+v3"),
        ([vs([{"route": [route_to(subset="v1")]}])], "reviews+v1"),
        # `reviews` in namespace bookinfo is not reviews.other.svc.cluster.local
        ([vs([{"route": [route_to(subset="v1")]}]), _dr("reviews", ["v1"], "other")], "reviews+v1"),
        (
            [
                vs([{"route": [route_to(subset="v1")], "mirror": {"host": "ratings", "subset": "v2"}}]),
                _dr("reviews", ["v1"]),
            ],
            "ratings+v2",
        ),
        ([vs(tcp=[{"route": [route_to(host="db", subset="primary")]}])], "db+primary"),
    ],
)
def test_missing_subset_is_ist0101(resources: list[dict], missing: str) -> None:
    messages = _codes(analyze([load_document(r) for r in resources]), "IST0101")
    assert len(messages) == 1
    m = messages[0]
    assert (m.level, m.resource_key) == ("Error", "VirtualService/bookinfo/reviews")
    assert m.text == f'Referenced host+subset in destinationrule not found: "{missing}"'


@pytest.mark.parametrize(
    ("gateways", "missing"),
    [
        (["bookinfo-gateway"], []),
        (["bookinfo/bookinfo-gateway", "mesh"], []),
        (["other/bookinfo-gateway"], ["other/bookinfo-gateway"]),
        (["nope"], ["nope"]),
    ],
)
def test_gateway_reference(gateways: list[str], missing: list[str]) -> None:
    resources = [
        load_document(vs([{"route": [route_to(subset=None)]}], gateways=gateways)),
        load_document(gw()),
    ]
    messages = _codes(analyze(resources), "IST0101")
    assert [m.text for m in messages] == [f'Referenced gateway not found: "{g}"' for g in missing]


def test_match_gateway_reference_is_checked_too() -> None:
    body = vs([{"match": [{"gateways": ["ghost"]}], "route": [route_to(subset=None)]}])
    (m,) = _codes(analyze([load_document(body)]), "IST0101")
    assert m.text == 'Referenced gateway not found: "ghost"'


def test_two_mesh_virtual_services_for_one_host_is_ist0109() -> None:
    a = doc("VirtualService", {"hosts": ["reviews"], "http": [{"route": [route_to(subset=None)]}]}, name="a")
    b = doc(
        "VirtualService",
        {"hosts": ["reviews.bookinfo.svc.cluster.local"], "http": [{"route": [route_to(subset=None)]}]},
        name="b",
    )
    messages = _codes(analyze([load_document(a), load_document(b)]), "IST0109")
    assert sorted(m.resource_key for m in messages) == [
        "VirtualService/bookinfo/a",
        "VirtualService/bookinfo/b",
    ]
    assert all("reviews.bookinfo.svc.cluster.local" in m.text and m.level == "Error" for m in messages)


@pytest.mark.parametrize("gateways_b", [["bookinfo-gateway"], None])
def test_no_ist0109_when_only_one_is_bound_to_mesh_or_same_resource(gateways_b) -> None:
    a = doc("VirtualService", {"hosts": ["reviews"], "http": [{"route": [route_to(subset=None)]}]}, name="a")
    spec_b = {"hosts": ["reviews"], "http": [{"route": [route_to(subset=None)]}]}
    if gateways_b:
        spec_b["gateways"] = gateways_b
        b = doc("VirtualService", spec_b, name="b")
    else:
        b = a  # the same resource applied twice replaces itself
    assert _codes(analyze([load_document(a), load_document(b), load_document(gw())]), "IST0109") == []


def test_enforced_only_resource_has_no_warnings() -> None:
    body = vs(
        [
            {
                "match": [{"uri": {"prefix": "/"}, "headers": {"x": {"exact": "y"}}}],
                "route": [route_to(weight=90), route_to(subset="v2", weight=10)],
                "rewrite": {"uri": "/v1"},
                "headers": {"request": {"set": {"a": "b"}}},
                "timeout": "3s",
                "retries": {"attempts": 3, "perTryTimeout": "0.5s", "retryOn": "5xx,503", "backoff": "50ms",
                            "retryIgnorePreviousHosts": False},
                "corsPolicy": {"allowOrigins": [{"exact": "https://a"}], "allowOrigin": ["https://b"],
                               "allowMethods": ["GET"], "allowHeaders": ["x"], "exposeHeaders": ["y"],
                               "maxAge": "1m", "allowCredentials": True, "unmatchedPreflights": "IGNORE"},
                "fault": {
                    "delay": {"fixedDelay": "2s", "percent": 50},
                    "abort": {"httpStatus": 503, "percentage": {"value": 10}},
                },
            },
            {"route": [route_to()], "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 1}}}},
            {
                "route": [route_to()],
                "mirror": {"host": "reviews", "subset": "v2", "port": {"number": 9080}},
                "mirrorPercentage": {"value": 50},
                "mirrorPercent": 10,
            },
            {
                "route": [route_to()],
                "mirrors": [{"destination": {"host": "reviews"}, "percentage": {"value": 5}}],
            },
        ]
    )
    assert unenforced_fields(load_document(body)) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            vs(
                [{"route": [route_to()], "corsPolicy": {"allowMethods": ["GET"]}}],
                tcp=[{"route": [route_to()]}],
                exportTo=["."],
            ),
            ["spec.tcp"],  # exportTo is honoured by the control plane, corsPolicy by the proxies
        ),
        (
            vs(
                [
                    {
                        "route": [route_to()],
                        "retries": {"attempts": 1, "retryOn": "5xx", "retryRemoteLocalities": True},
                        "timeout": "1s",
                        "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 5}}},
                        "rewrite": {"uri": "/"},
                        "name": "r",
                        "match": [{"uri": {"exact": "/"}, "statPrefix": "s"}],
                    }
                ]
            ),
            ["spec.http[0].retries.retryRemoteLocalities", "spec.http[0].fault.abort.grpcStatus"],
        ),
        (
            dr(
                trafficPolicy={
                    "loadBalancer": {"simple": "RANDOM", "localityLbSetting": {"enabled": True}},
                    "tls": {"mode": "SIMPLE", "sni": "reviews", "caCrl": "/etc/crl.pem"},
                    "connectionPool": {
                        "tcp": {"maxConnections": 1, "connectTimeout": "1s", "tcpKeepalive": {"probes": 3}},
                        "http": {
                            "http1MaxPendingRequests": 1,
                            "http2MaxRequests": 2,
                            "maxRequestsPerConnection": 1,
                            "maxRetries": 3,
                            "idleTimeout": "5s",
                            "h2UpgradePolicy": "UPGRADE",
                        },
                    },
                    "outlierDetection": {
                        "consecutiveErrors": 1,
                        "consecutive5xxErrors": 2,
                        "consecutiveGatewayErrors": 3,
                        "interval": "1s",
                        "baseEjectionTime": "3m",
                        "maxEjectionPercent": 100,
                        "minHealthPercent": 50,
                        "splitExternalLocalOriginErrors": True,
                    },
                    "portLevelSettings": [
                        {
                            "port": {"number": 9080},
                            "loadBalancer": {"simple": "RANDOM"},
                            "connectionPool": {"http": {"maxRetries": 1, "useClientProtocol": True}},
                            "outlierDetection": {"consecutive5xxErrors": 1},
                            "tls": {"mode": "ISTIO_MUTUAL"},
                        }
                    ],
                },
                subsets=[
                    {
                        "name": "v1",
                        "trafficPolicy": {
                            "loadBalancer": {
                                "consistentHash": {"useSourceIp": True, "ringHash": {"minimumRingSize": 8}}
                            },
                            "connectionPool": {"tcp": {"maxConnections": 2}},
                            "outlierDetection": {"consecutiveLocalOriginFailures": 2,
                                                 "splitExternalLocalOriginErrors": True},
                            "portLevelSettings": [
                                {"port": {"number": 9080}, "outlierDetection": {"interval": "2s"}}
                            ],
                        },
                    }
                ],
            ),
            [
                "spec.trafficPolicy.loadBalancer.localityLbSetting",
                "spec.trafficPolicy.tls.caCrl",  # tls.mode and tls.sni are enforced
                "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
                "spec.trafficPolicy.portLevelSettings[0].connectionPool.http.useClientProtocol",
            ],  # splitExternalLocalOriginErrors and consecutiveLocalOriginFailures are enforced
        ),
        (
            gw(
                [
                    {
                        "port": {"number": 443, "protocol": "HTTPS"},
                        "hosts": ["*"],
                        "bind": "0.0.0.0",
                        "tls": {"mode": "SIMPLE", "credentialName": "c", "cipherSuites": ["AES128-SHA"],
                                "maxProtocolVersion": "TLSV1_3", "verifyCertificateHash": ["ab" * 32]},
                    }
                ]
            ),
            ["spec.servers[0].bind"],  # the TLS options are enforced
        ),
        (
            doc(
                "ServiceEntry",
                {
                    "hosts": ["a.com"],
                    "resolution": "STATIC",
                    "subjectAltNames": ["x"],
                    "endpoints": [{"address": "1.1.1.1", "network": "n"}],
                },
            ),
            ["spec.endpoints[0].network", "spec.subjectAltNames"],
        ),
    ],
)
def test_unenforced_fields_are_named(body: dict, expected: list[str]) -> None:
    assert sorted(unenforced_fields(load_document(body))) == sorted(expected)


def test_unenforced_fields_become_warnings() -> None:
    body = vs([{"route": [route_to()], "websocketUpgrade": True}])
    resources = [load_document(body), load_document(_dr("reviews", ["v1"]))]
    (m,) = _codes(analyze(resources), "WEIR0001")
    assert (m.level, m.resource_key) == ("Warning", "VirtualService/bookinfo/reviews")
    assert "spec.http[0].websocketUpgrade" in m.text


def test_enforced_source_namespace_and_workload_selector_are_not_warned() -> None:
    """`sourceNamespace` drops match blocks for other namespaces (mesh.control.routes); a DestinationRule
    `workloadSelector` limits it to matching workloads of its namespace (mesh.control.clusters)."""
    body = vs([{"match": [{"sourceNamespace": "bookinfo"}], "route": [route_to()]}])
    rule = _dr("reviews", ["v1"])
    rule["spec"]["workloadSelector"] = {"matchLabels": {"app": "gw"}}
    assert _codes(analyze([load_document(body), load_document(rule)]), "WEIR0001") == []


def _server(protocol: str, mode: str | None = None, number: int = 443) -> dict:
    server: dict = {"port": {"number": number, "name": f"p{number}", "protocol": protocol}, "hosts": ["*"]}
    if mode is not None:
        server["tls"] = {"mode": mode}
        if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
            server["tls"]["credentialName"] = "cert"
    return server


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (_server("HTTP", number=80), None),
        (_server("HTTPS", "SIMPLE"), None),
        (_server("HTTPS", "MUTUAL"), None),
        (_server("HTTPS", "OPTIONAL_MUTUAL"), None),
        (_server("HTTPS", "ISTIO_MUTUAL"), None),
        (_server("GRPC", number=8080), None),
        (_server("HTTPS", "PASSTHROUGH"), "spec.servers[0].tls.mode PASSTHROUGH "),
        (_server("TLS", "AUTO_PASSTHROUGH"), "spec.servers[0].tls.mode AUTO_PASSTHROUGH "),
        ({**_server("HTTPS"), "tls": {"credentialName": "cert"}}, "spec.servers[0].tls.mode PASSTHROUGH (unset) "),
        (_server("TLS", "SIMPLE"), "spec.servers[0].port.protocol TLS "),
        (_server("TCP", number=3306), "spec.servers[0].port.protocol TCP "),
        (_server("mongo", number=27017), "spec.servers[0].port.protocol mongo "),
    ],
)
def test_gateway_servers_weir_drops_are_warned_naming_field_and_value(server: dict, expected: str | None) -> None:
    (resource,) = load_text(to_yaml(gw([server])))
    messages = _codes(analyze([resource]), "WEIR0001")
    if expected is None:
        assert messages == []
    else:
        (m,) = messages
        assert (m.level, m.resource_key) == ("Warning", "Gateway/bookinfo/bookinfo-gateway")
        assert m.text.startswith(expected + "is accepted but not enforced by Weir yet: ")
        assert "this server is not served" in m.text


def test_only_the_dropped_server_of_a_gateway_is_warned() -> None:
    body = gw([_server("HTTP", number=80), _server("HTTPS", "SIMPLE"), _server("TLS", "PASSTHROUGH", number=8443)])
    (m,) = _codes(analyze([load_document(body)]), "WEIR0001")
    assert m.text.startswith("spec.servers[2].tls.mode PASSTHROUGH ")


def test_a_simple_server_sharing_a_port_with_client_certificate_servers_is_warned() -> None:
    mixed = [_server("HTTPS", "MUTUAL"), _server("HTTPS", "SIMPLE"), _server("HTTPS", "SIMPLE", number=8443)]
    for i, host in enumerate(("a.example.com", "b.example.com", "c.example.com")):
        mixed[i]["hosts"] = [host]
    (m,) = _codes(analyze([load_document(gw(mixed))]), "WEIR0001")
    assert m.text.startswith("spec.servers[1].tls.mode SIMPLE ")
    assert "a client that sends a certificate here fails the handshake" in m.text


def test_tls_option_values_weir_does_not_act_on_are_warned() -> None:
    server = _server("HTTPS", "SIMPLE")
    server["tls"].update(minProtocolVersion="TLSV1_0", maxProtocolVersion="TLSV1_3", cipherSuites=[
        "AES128-SHA", "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "!RC4", "AES128-SHA",
        "[AES256-SHA|RC4-MD5]"])
    texts = {m.text.split(" is accepted")[0]: m.text for m in _codes(analyze([load_document(gw([server]))]),
                                                                       "WEIR0001")}
    assert sorted(texts) == [
        "spec.servers[0].tls.cipherSuites[2] !RC4", "spec.servers[0].tls.cipherSuites[3] AES128-SHA",
        "spec.servers[0].tls.cipherSuites[4] [AES256-SHA|RC4-MD5]", "spec.servers[0].tls.minProtocolVersion TLSV1_0"]
    assert "serves TLS 1.2 and 1.3 only" in texts["spec.servers[0].tls.minProtocolVersion TLSV1_0"]
    assert "duplicate" in texts["spec.servers[0].tls.cipherSuites[3] AES128-SHA"]
    assert "passes on to Envoy" in texts["spec.servers[0].tls.cipherSuites[2] !RC4"]
    assert "not a suite Istio knows" in _tls_warnings(cipherSuites=["RC4-MD5"])[0]


def _tls_warnings(mode: str = "SIMPLE", **tls: object) -> list[str]:
    server = _server("HTTPS", mode)
    server["tls"].update(tls)
    return [m.text for m in _codes(analyze([load_document(gw([server]))]), "WEIR0001")]


def test_pins_where_no_client_certificate_is_verified_and_suites_of_istio_mutual_are_warned() -> None:
    (pins,) = _tls_warnings(verifyCertificateHash=["ab" * 32])
    assert pins.startswith("spec.servers[0].tls.verifyCertificateHash ") and "not used" in pins
    assert _tls_warnings("MUTUAL", caCertificates="/ca.pem", verifyCertificateHash=["ab" * 32]) == []
    (suites,) = _tls_warnings("ISTIO_MUTUAL", cipherSuites=["AES128-SHA"])
    assert suites.startswith("spec.servers[0].tls.cipherSuites ") and "not applied" in suites


def test_a_capped_server_caps_its_port_and_the_others_are_warned() -> None:
    servers = [_server("HTTPS", "SIMPLE"), _server("HTTPS", "SIMPLE"), _server("HTTPS", "SIMPLE", number=8443)]
    for server, host in zip(servers, ("a.example.com", "b.example.com", "c.example.com"), strict=True):
        server["hosts"] = [host]
    servers[0]["tls"]["maxProtocolVersion"] = "TLSV1_2"
    (m,) = _codes(analyze([load_document(gw(servers))]), "WEIR0001")
    assert m.text.startswith("spec.servers[1].tls.maxProtocolVersion TLSV1_3 ") and "TLSV1_2" in m.text


@pytest.mark.parametrize(
    ("protocol", "warned"),
    [("HTTP", False), ("http2", False), ("GRPC", False), (None, False),
     ("HTTPS", True), ("TLS", True), ("TCP", True), ("MONGO", True), ("mysql", True)],
)
def test_service_entry_ports_sidecars_cannot_carry_are_warned(protocol: str | None, warned: bool) -> None:
    port: dict = {"number": 443, "name": "p"}
    if protocol is not None:
        port["protocol"] = protocol
    entry = se(hosts=["api.example.com"], ports=[{"number": 80, "name": "http", "protocol": "HTTP"}, port],
               resolution="DNS")
    messages = _codes(analyze([load_document(entry)]), "WEIR0001")
    if not warned:
        assert messages == []
        return
    (m,) = messages
    assert m.resource_key == "ServiceEntry/bookinfo/external"
    assert m.text.startswith(f"spec.ports[1].protocol {protocol} is accepted but not enforced by Weir yet: ")
    assert "HTTP only" in m.text


def test_optional_mutual_needs_a_client_ca_like_mutual() -> None:
    """Istio: OPTIONAL_MUTUAL verifies the certificates clients present, so file-based servers name a CA."""
    server = {**_server("HTTPS"), "tls": {"mode": "OPTIONAL_MUTUAL", "serverCertificate": "/c", "privateKey": "/k"}}
    with pytest.raises(ConfigError, match="client CA bundle"):
        load_document(gw([server]))
    server["tls"]["caCertificates"] = "/ca"
    load_document(gw([server]))


def test_errors_come_before_warnings() -> None:
    body = vs([{"route": [route_to(subset="v9")], "websocketUpgrade": True}])
    levels = [m.level for m in analyze([load_document(body)])]
    assert levels == sorted(levels, key=["Error", "Warning", "Info"].index) and levels[0] == "Error"


def test_enforced_table_covers_every_kind() -> None:
    assert set(ENFORCED) == set(KINDS)


@pytest.mark.parametrize(
    ("host", "namespace", "expected"),
    [
        ("books", "bookinfo", "books.bookinfo.svc.cluster.local"),
        ("books.bookinfo", "default", "books.bookinfo.svc.cluster.local"),
        ("books.bookinfo.svc", "default", "books.bookinfo.svc.cluster.local"),
        ("books.bookinfo.svc.cluster.local", "default", "books.bookinfo.svc.cluster.local"),
        ("api.example.com", "default", "api.example.com"),
        ("example.com", "default", "example.com"),
        ("a.b.c.d", "default", "a.b.c.d"),
        ("*.example.com", "default", "*.example.com"),
        ("*", "default", "*"),
        ("10.0.0.1", "default", "10.0.0.1"),
    ],
)
def test_fqdn(host: str, namespace: str, expected: str) -> None:
    assert fqdn(host, namespace) == expected


def test_mesh_api_imports_nothing_else_from_the_project() -> None:
    root = Path(__file__).parents[3] / "mesh" / "api"
    allowed_third_party = {"pydantic", "pydantic_core", "yaml", "re2"}  # re2: regexes are checked by RE2, as Istio
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            for name in names:
                top = name.split(".")[0]
                if top == "mesh":
                    assert name.startswith("mesh.api"), f"{path.name} imports {name}"
                elif top in ("bookinfo", "infra", "tests"):
                    raise AssertionError(f"{path.name} imports {name}")
                else:
                    assert top in allowed_third_party or top in __import__("sys").stdlib_module_names, name
