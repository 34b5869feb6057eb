"""Valid resources of each kind and apiVersion load into the models, with the attributes readers use."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mesh.api import (
    ConfigError,
    DestinationRule,
    Duration,
    Gateway,
    ServiceEntry,
    StringMatch,
    VirtualService,
    dump,
    load_document,
    load_text,
)
from tests.mesh.api.conftest import API_VERSIONS, doc, dr, gw, route_to, se, to_yaml, vs

FULL_VS = {
    "hosts": ["reviews", "reviews.example.com"],
    "gateways": ["mesh", "bookinfo-gateway"],
    "exportTo": ["."],
    "http": [
        {
            "name": "jason",
            "match": [
                {
                    "name": "m",
                    "uri": {"prefix": "/reviews"},
                    "scheme": {"exact": "http"},
                    "method": {"regex": "GET|POST"},
                    "authority": {"exact": "reviews"},
                    "headers": {"end-user": {"exact": "jason"}, "x-present": {}},
                    "port": 9080,
                    "sourceLabels": {"app": "productpage", "version": 1},
                    "gateways": ["mesh"],
                    "queryParams": {"debug": {"exact": "1"}},
                    "ignoreUriCase": True,
                    "withoutHeaders": {"x-skip": {"prefix": "y"}},
                    "sourceNamespace": "bookinfo",
                    "statPrefix": "jason",
                }
            ],
            "route": [
                {**route_to(subset="v2", weight=25), "headers": {"response": {"remove": ["foo"]}}},
                route_to(subset="v1", weight=75),
            ],
            "rewrite": {"uri": "/v2", "authority": "reviews-v2"},
            "timeout": "1.5s",
            "retries": {
                "attempts": 3,
                "perTryTimeout": "300ms",
                "retryOn": "5xx,connect-failure,503",
                "retryRemoteLocalities": True,
            },
            "fault": {
                "delay": {"fixedDelay": "2s", "percentage": {"value": 10}, "percent": 10},
                "abort": {"httpStatus": 503, "percentage": {"value": 0.5}},
            },
            "mirror": {"host": "ratings", "subset": "v2", "port": {"number": 9080}},
            "mirrorPercentage": {"value": 50.0},
            "mirrorPercent": 50,
            "corsPolicy": {
                "allowOrigins": [{"exact": "https://example.com"}],
                "allowMethods": ["GET"],
                "allowHeaders": ["x", "content-type, x-a"],  # entries are joined as they are, as Istio does
                "exposeHeaders": ["y"],
                "maxAge": "24h",
                "allowCredentials": False,
            },
            "headers": {
                "request": {"set": {"x-test": True}, "add": {"x-a": "b"}, "remove": ["x-c"]},
                "response": {"set": {"x-r": "1"}},
            },
        },
        {
            "match": [{"uri": {"exact": "/old"}}],
            "redirect": {"uri": "/new", "authority": "x", "redirectCode": 302},
        },
        {
            "match": [{"uri": {"exact": "/gone"}}],
            "directResponse": {"status": 410, "body": {"string": "gone"}},
        },
        {"match": [{"uri": {"prefix": "/d"}}], "delegate": {"name": "reviews-d", "namespace": "other"}},
        {
            "match": [{"uri": {"regex": "/r/.*"}}],
            "rewrite": {"uriRegexRewrite": {"match": "^/r/(.*)$", "rewrite": "/\\1"}},
            "mirrors": [{"destination": {"host": "ratings"}, "percentage": {"value": 5}}],
            "route": [route_to()],
        },
    ],
    "tls": [
        {"match": [{"sniHosts": ["reviews.example.com"], "port": 443}], "route": [route_to(subset=None)]}
    ],
    "tcp": [
        {
            "match": [{"port": 27017, "destinationSubnets": ["10.0.0.0/8"]}],
            "route": [route_to(host="mongo", subset=None, weight=100)],
        }
    ],
}

FULL_DR = {
    "host": "reviews",
    "exportTo": ["*"],
    "workloadSelector": {"matchLabels": {"app": "productpage"}},
    "trafficPolicy": {
        "loadBalancer": {
            "consistentHash": {
                "httpCookie": {"name": "user", "path": "/", "ttl": "0s"},
                "ringHash": {"minimumRingSize": 1024},
            },
            "localityLbSetting": {
                "enabled": True,
                "distribute": [
                    {"from": "us-west/zone1/*", "to": {"us-west/zone1/*": 80, "us-west/zone2/*": 20}}
                ],
            },
            "warmupDurationSecs": "10s",
            "warmup": {"duration": "60s", "minimumPercent": 10, "aggression": 1.5},
        },
        "connectionPool": {
            "tcp": {
                "maxConnections": 1,
                "connectTimeout": "30ms",
                "tcpKeepalive": {"time": "7200s", "interval": "75s", "probes": 9},
            },
            "http": {
                "http1MaxPendingRequests": 1,
                "maxRequestsPerConnection": 1,
                "http2MaxRequests": 10,
                "maxRetries": 3,
                "idleTimeout": "1h",
                "h2UpgradePolicy": "UPGRADE",
                "useClientProtocol": True,
                "maxConcurrentStreams": 100,
            },
        },
        "outlierDetection": {
            "consecutiveErrors": 1,
            "consecutive5xxErrors": 5,
            "consecutiveGatewayErrors": 2,
            "consecutiveLocalOriginFailures": 3,
            "splitExternalLocalOriginErrors": True,
            "interval": "1s",
            "baseEjectionTime": "3m",
            "maxEjectionPercent": 100,
            "minHealthPercent": 0,
        },
        "tls": {"mode": "ISTIO_MUTUAL", "sni": "reviews"},
        "portLevelSettings": [{"port": {"number": 9080}, "loadBalancer": {"simple": "LEAST_REQUEST"}}],
        "tunnel": {"protocol": "CONNECT", "targetHost": "10.0.0.1", "targetPort": 8080},
        "proxyProtocol": {"version": "V2"},
    },
    "subsets": [
        {"name": "v1", "labels": {"version": "v1"}},
        {
            "name": "v2",
            "labels": {"version": "v2"},
            "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
        },
    ],
}


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_virtual_service_every_field(api_version: str) -> None:
    (res,) = load_text(to_yaml(doc("VirtualService", FULL_VS, api_version=api_version)))
    assert isinstance(res, VirtualService)
    assert res.api_version == api_version
    assert res.key == "VirtualService/bookinfo/reviews"
    http = res.spec.http[0]
    assert http.match[0].uri.prefix == "/reviews"
    assert http.match[0].headers["x-present"].is_empty
    assert http.match[0].source_labels == {"app": "productpage", "version": "1"}
    assert [(d.destination.subset, d.weight) for d in http.route] == [("v2", 25), ("v1", 75)]
    assert http.route[0].destination.host == "reviews"
    assert http.timeout == Duration(1.5, "1.5s")
    assert http.retries.per_try_timeout.seconds == pytest.approx(0.3)
    assert http.fault.delay.fixed_delay.seconds == 2.0
    assert http.fault.abort.http_status == 503
    assert http.fault.abort.percentage.value == 0.5
    assert http.mirror.port.number == 9080
    assert http.mirror_percentage.value == 50.0
    assert http.headers.request.set == {"x-test": "true"}
    assert res.spec.http[1].redirect.redirect_code == 302
    assert res.spec.http[2].direct_response.status == 410
    assert res.spec.http[3].delegate.namespace == "other"
    assert res.spec.http[4].rewrite.uri_regex_rewrite.rewrite == "/\\1"
    assert res.spec.tls[0].match[0].sni_hosts == ["reviews.example.com"]
    assert res.spec.tcp[0].route[0].destination.host == "mongo"


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_destination_rule_every_field(api_version: str) -> None:
    (res,) = load_text(to_yaml(doc("DestinationRule", FULL_DR, api_version=api_version)))
    assert isinstance(res, DestinationRule)
    tp = res.spec.traffic_policy
    assert tp.load_balancer.consistent_hash.http_cookie.ttl.seconds == 0
    assert tp.load_balancer.warmup.minimum_percent == 10
    assert tp.connection_pool.http.h2_upgrade_policy == "UPGRADE"
    assert tp.outlier_detection.consecutive_5xx_errors == 5
    assert tp.outlier_detection.base_ejection_time.seconds == 180
    assert tp.port_level_settings[0].load_balancer.simple == "LEAST_REQUEST"
    assert res.spec.subsets[1].labels == {"version": "v2"}
    assert res.spec.subset("v2").traffic_policy.load_balancer.simple == "ROUND_ROBIN"
    assert res.spec.subset("v3") is None


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_gateway(api_version: str) -> None:
    servers = [
        {
            "port": {"number": 80, "name": "http", "protocol": "HTTP"},
            "hosts": ["bookinfo/*.example.com"],
            "tls": {"httpsRedirect": True},
            "name": "http",
        },
        {
            "port": {"number": 443, "name": "https", "protocol": "HTTPS", "targetPort": 8443},
            "hosts": ["*"],
            "bind": "0.0.0.0",
            "defaultEndpoint": "127.0.0.1:8080",
            "tls": {
                "mode": "SIMPLE",
                "credentialName": "cert",
                "minProtocolVersion": "TLSV1_2",
                "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"],
                "subjectAltNames": ["a"],
            },
        },
        {
            "port": {"number": 15443, "name": "tls", "protocol": "tls"},
            "hosts": ["*.local"],
            "tls": {"mode": "AUTO_PASSTHROUGH"},
        },
    ]
    body = gw(servers)
    body["apiVersion"] = api_version
    (res,) = load_text(to_yaml(body))
    assert isinstance(res, Gateway)
    assert res.spec.selector == {"istio": "ingressgateway"}
    assert res.spec.servers[1].port.target_port == 8443
    assert res.spec.servers[1].tls.credential_name == "cert"
    assert res.key == "Gateway/bookinfo/bookinfo-gateway"


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_service_entry(api_version: str) -> None:
    body = se(
        hosts=["api.example.com"],
        addresses=["240.0.0.1"],
        location="MESH_EXTERNAL",
        resolution="STATIC",
        exportTo=["."],
        subjectAltNames=["spiffe://x"],
        ports=[{"number": 443, "name": "https", "protocol": "TLS", "targetPort": 8443}],
        endpoints=[
            {
                "address": "10.0.0.1",
                "ports": {"https": 8443},
                "labels": {"v": "1"},
                "network": "n1",
                "locality": "us/a",
                "weight": 3,
                "serviceAccount": "sa",
            }
        ],
    )
    body["apiVersion"] = api_version
    (res,) = load_text(to_yaml(body))
    assert isinstance(res, ServiceEntry)
    assert res.spec.endpoints[0].ports == {"https": 8443}
    assert res.spec.resolution == "STATIC"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1.5s", 1.5),
        ("300ms", 0.3),
        ("1m", 60),
        ("2h", 7200),
        ("1h30m", 5400),
        ("10us", 1e-5),
        ("10µs", 1e-5),
        ("5ns", 5e-9),
        ("0s", 0.0),
        ("0", 0.0),
        (".5s", 0.5),
    ],
)
def test_duration_parses_go_syntax(text: str, seconds: float) -> None:
    d = Duration.parse(text)
    assert d.seconds == pytest.approx(seconds)
    assert d.text == text and str(d) == text


@pytest.mark.parametrize("text", ["", "5", "1.5", "s", "1d", "1 s", "-1s", "1s2", "abc", "1.5.5s"])
def test_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Duration.parse(text)


def test_models_are_frozen() -> None:
    (res,) = load_text(to_yaml(vs([{"route": [route_to()]}])))
    with pytest.raises(ValidationError):
        res.spec.hosts = ["x"]  # type: ignore[misc]
    with pytest.raises(ValidationError):
        StringMatch(exact="a").exact = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    "body",
    [
        doc("VirtualService", FULL_VS),
        doc("DestinationRule", FULL_DR),
        gw(),
        se(hosts=["a.example.com"], resolution="DNS", ports=[{"number": 80, "name": "http"}]),
    ],
)
def test_dump_round_trips_in_istio_shape(body: dict) -> None:
    res = load_document(body)
    out = dump(res)
    assert out["apiVersion"] == body["apiVersion"] and out["kind"] == body["kind"]
    assert load_document(out) == res
    assert "status" not in out
    assert all("_" not in k for k in out["spec"])  # camelCase keys


def test_dump_writes_durations_as_given_and_leaves_unset_out() -> None:
    res = load_document(vs([{"timeout": "1.5s", "route": [route_to()]}]))
    assert dump(res)["spec"] == {
        "hosts": ["reviews"],
        "http": [{"timeout": "1.5s", "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}],
    }


def test_models_accept_python_names_too() -> None:
    res = load_document(dr(traffic_policy={"load_balancer": {"simple": "RANDOM"}}))
    assert res.spec.traffic_policy.load_balancer.simple == "RANDOM"


def test_relative_weights_any_total_is_fine() -> None:
    res = load_document(vs([{"route": [route_to(weight=1), route_to(subset="v2", weight=3)]}]))
    assert [d.weight for d in res.spec.http[0].route] == [1, 3]


def test_single_destination_may_omit_or_zero_its_weight() -> None:
    load_document(vs([{"route": [route_to()]}]))
    load_document(vs([{"route": [route_to(weight=0)]}]))


def test_delegate_virtual_service_without_hosts() -> None:
    body = doc("VirtualService", {"http": [{"route": [route_to(host="reviews.bookinfo.svc.cluster.local")]}]})
    assert load_document(body).spec.is_delegate


@pytest.mark.parametrize("cls", [VirtualService, DestinationRule, Gateway, ServiceEntry])
def test_json_schema_is_available_for_crd_generation(cls: type) -> None:
    schema = cls.model_json_schema(by_alias=True)
    assert set(schema["required"]) >= {"apiVersion", "kind", "metadata", "spec"}
    assert all("_" not in name for name in schema["properties"])


@pytest.mark.parametrize(
    "cookie",
    [
        {"name": "u", "attributes": [{"name": "SameSite", "value": "Strict\r\nx-injected: 1"}]},
        {"name": "u", "attributes": [{"name": "Same\nSite"}]},
        {"name": "u\r\nx-injected: 1"},
        {"name": "u", "path": "/\x00"},
    ],
)
def test_http_cookie_parts_cannot_break_the_set_cookie_header(cookie: dict) -> None:
    """The generated cookie's name, path and attributes are written into a Set-Cookie response header."""
    body = dr(trafficPolicy={"loadBalancer": {"consistentHash": {"httpCookie": {**cookie, "ttl": "0s"}}}})
    with pytest.raises(ConfigError, match="Set-Cookie"):
        load_document(body)


def test_http_cookie_attributes_parse() -> None:
    cookie = {"name": "u", "ttl": "0s", "attributes": [{"name": "SameSite", "value": "Lax"}, {"name": "Secure"}]}
    rule = load_document(dr(trafficPolicy={"loadBalancer": {"consistentHash": {"httpCookie": cookie}}}))
    parsed = rule.spec.traffic_policy.load_balancer.consistent_hash.http_cookie.attributes
    assert [(a.name, a.value) for a in parsed] == [("SameSite", "Lax"), ("Secure", None)]


@pytest.mark.parametrize("rewrite, path, rewritten", [
    ("/v2\\0", "/books/x", "/v2/books/x"),  # \0: the whole match, as Envoy (RE2) reads it
    ("/v2\\1", "/books/x", "/v2/x"),
    ("/a\\\\b\\1", "/books/x", "/a\\b/x"),  # \\: one backslash
    ("/plain", "/books/x", "/plain"),
])
def test_a_regex_rewrite_is_applied_as_re2_reads_its_rewrite_string(rewrite, path, rewritten):
    import re

    from mesh.api.httproute import RegexRewrite

    regex_rewrite = RegexRewrite(match="^/books(/.*)$", rewrite=rewrite)
    assert re.compile(regex_rewrite.match).sub(regex_rewrite.template, path) == rewritten


@pytest.mark.parametrize("pattern, path, matches", [
    ("/\\pL+", "/bücher", True),  # a Unicode class: RE2 and Go read it, Python's `re` does not
    ("/books\\z", "/books", True),  # RE2's end of text (Python writes \Z, which RE2 refuses)
    ("(?U)/b.+", "/books", True),  # RE2's ungreedy flag
    ("/\\pN+", "/books", False),
])
def test_re2_only_syntax_is_valid_as_istio_and_envoy_read_it(pattern, path, matches) -> None:
    from mesh.proxy.matching import compile_regex

    service = load_document(vs([{"match": [{"uri": {"regex": pattern}}], "route": [route_to("reviews")]}]))
    assert service.spec.http[0].match[0].uri.regex == pattern
    assert bool(compile_regex(pattern).fullmatch(path)) is matches  # as the proxy runs it
