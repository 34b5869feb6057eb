"""Every refusal names the file, the resource and the exact field path, like Istio's webhook."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.api import ConfigError, load_text
from tests.mesh.api.conftest import FILE, doc, dr, gw, route_to, se, to_yaml, vs

VS_KEY = "VirtualService/bookinfo/reviews"
DR_KEY = "DestinationRule/bookinfo/reviews"
GW_KEY = "Gateway/bookinfo/bookinfo-gateway"
SE_KEY = "ServiceEntry/bookinfo/external"


def http(**rule: Any) -> dict[str, Any]:
    return vs([{"route": [route_to()], **rule}])


def match(**m: Any) -> dict[str, Any]:
    return vs([{"match": [m], "route": [route_to()]}])


def server(**s: Any) -> dict[str, Any]:
    return gw([{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"], **s}])


def tp(**policy: Any) -> dict[str, Any]:
    return dr(trafficPolicy=policy)


SE_BASE = {"hosts": ["api.example.com"], "ports": [{"number": 443, "name": "https", "protocol": "TLS"}]}

CASES = [
    # --- VirtualService
    ("unknown-field", http(foo=1), VS_KEY, "spec.http[0].foo", "unknown field"),
    # Gateway client certificate pins: Envoy refuses a malformed one at config load, Weir at apply
    ("gw-hash", server(tls={"mode": "SIMPLE", "credentialName": "c", "verifyCertificateHash": ["abc"]}), GW_KEY,
     "spec.servers[0].tls.verifyCertificateHash[0]", "not a hex-encoded SHA-256 hash"),
    ("gw-spki", server(tls={"mode": "SIMPLE", "credentialName": "c", "verifyCertificateSpki": ["bm90IDMyIGJ5dGVz"]}),
     GW_KEY, "spec.servers[0].tls.verifyCertificateSpki[0]", "not a base64-encoded SHA-256 hash"),
    ("gw-hash-newline", server(tls={"mode": "SIMPLE", "credentialName": "c", "verifyCertificateHash": ["ab" * 32 + "\n"]}),
     GW_KEY, "spec.servers[0].tls.verifyCertificateHash[0]", "not a hex-encoded SHA-256 hash"),
    ("gw-hash-stray-colons", server(tls={"mode": "SIMPLE", "credentialName": "c",
                                         "verifyCertificateHash": ["abcd:" + "ab" * 30]}),
     GW_KEY, "spec.servers[0].tls.verifyCertificateHash[0]", "not a hex-encoded SHA-256 hash"),
    ("gw-versions", server(tls={"mode": "SIMPLE", "credentialName": "c", "minProtocolVersion": "TLSV1_3",
                                "maxProtocolVersion": "TLSV1_2"}),
     GW_KEY, "spec.servers[0].tls.maxProtocolVersion", "maxProtocolVersion TLSV1_2 is below minProtocolVersion"),
    ("local-origin-without-split", tp(outlierDetection={"consecutiveLocalOriginFailures": 3}), DR_KEY,
     "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures", "splitExternalLocalOriginErrors is not"),
    # corsPolicy, as Istio's validateCORSPolicy
    ("cors-method", http(corsPolicy={"allowMethods": ["GET", "FETCH"]}), VS_KEY,
     "spec.http[0].corsPolicy.allowMethods[1]", "'FETCH' is not a supported HTTP method"),
    ("cors-method-wildcard", http(corsPolicy={"allowMethods": ["*"]}), VS_KEY,
     "spec.http[0].corsPolicy.allowMethods[0]", "not a supported HTTP method"),
    ("cors-header-name-empty", http(corsPolicy={"allowHeaders": ["x-a", ""]}), VS_KEY,
     "spec.http[0].corsPolicy.allowHeaders[1]", "header name cannot be empty"),
    ("cors-expose-name-crlf", http(corsPolicy={"exposeHeaders": ["a\r\nset-cookie: x"]}), VS_KEY,
     "spec.http[0].corsPolicy.exposeHeaders[0]", "control or non-Latin-1 characters"),
    ("cors-max-age-fraction", http(corsPolicy={"maxAge": "1.5s"}), VS_KEY,
     "spec.http[0].corsPolicy.maxAge", "accurate only to seconds"),
    ("cors-max-age-zero", http(corsPolicy={"maxAge": "0s"}), VS_KEY, "spec.http[0].corsPolicy.maxAge", "at least 1ms"),
    ("cors-empty-origin", http(corsPolicy={"allowOrigins": [{"exact": ""}]}), VS_KEY,
     "spec.http[0].corsPolicy.allowOrigins[0]", "not a valid match for a CORS allowed origin"),
    ("cors-no-origin-match", http(corsPolicy={"allowOrigins": [{}]}), VS_KEY,
     "spec.http[0].corsPolicy.allowOrigins[0]", "one of exact, prefix or regex is required"),
    ("cors-origin-regex", http(corsPolicy={"allowOrigins": [{"regex": "(?=x)"}]}), VS_KEY,
     "spec.http[0].corsPolicy.allowOrigins[0].regex", "not RE2 syntax"),
    ("cors-unmatched-preflights", http(corsPolicy={"unmatchedPreflights": "DROP"}), VS_KEY,
     "spec.http[0].corsPolicy.unmatchedPreflights", "'UNSPECIFIED', 'FORWARD' or 'IGNORE'"),
    ("unknown-spec-field", vs([{"route": [route_to()]}], hostz=["a"]), VS_KEY, "spec.hostz", "unknown field"),
    (
        "weight-bad-type",
        vs([{"route": [{**route_to(), "weight": "heavy"}]}]),
        VS_KEY,
        "spec.http[0].route[0].weight",
        "invalid type",
    ),
    ("hosts-bad-type", vs([{"route": [route_to()]}], hosts="reviews"), VS_KEY, "spec.hosts", "invalid type"),
    ("bad-duration", http(timeout="5 seconds"), VS_KEY, "spec.http[0].timeout", "invalid duration"),
    ("duration-not-string", http(timeout=5), VS_KEY, "spec.http[0].timeout", "invalid duration"),
    ("negative-duration", http(timeout="-1s"), VS_KEY, "spec.http[0].timeout", "must not be negative"),
    (
        "per-try-under-1ms",
        http(retries={"attempts": 2, "perTryTimeout": "0s"}),
        VS_KEY,
        "spec.http[0].retries.perTryTimeout",
        "at least 1ms",
    ),
    (
        "total-weight-zero",
        vs([{"route": [route_to(weight=0), route_to(subset="v2", weight=0)]}]),
        VS_KEY,
        "spec.http[0].route",
        "total weight is 0",
    ),
    (
        "total-weight-zero-unset",
        vs([{"route": [route_to(), route_to(subset="v2")]}]),
        VS_KEY,
        "spec.http[0].route",
        "total weight is 0",
    ),
    (
        "negative-weight",
        vs([{"route": [route_to(weight=110), route_to(subset="v2", weight=-10)]}]),
        VS_KEY,
        "spec.http[0].route[1].weight",
        "must not be negative",
    ),
    (
        "tcp-total-weight-zero",
        vs(tcp=[{"route": [route_to(weight=0), route_to(subset="v2", weight=0)]}]),
        VS_KEY,
        "spec.tcp[0].route",
        "total weight is 0",
    ),
    (
        "bad-regex",
        match(uri={"regex": "(unclosed"}),
        VS_KEY,
        "spec.http[0].match[0].uri.regex",
        "invalid regex",
    ),
    (
        "regex-lookahead-not-re2",
        match(uri={"regex": "/books(?!/admin)"}),
        VS_KEY,
        "spec.http[0].match[0].uri.regex",
        "lookahead/lookbehind is not RE2 syntax",
    ),
    (
        "regex-lookbehind-in-a-group-not-re2",
        match(uri={"regex": "/(a|(?<=x)b)+"}),
        VS_KEY,
        "spec.http[0].match[0].uri.regex",
        "lookahead/lookbehind is not RE2 syntax",
    ),
    (
        "rewrite-python-group-syntax",
        http(rewrite={"uriRegexRewrite": {"match": "^/books(/.*)$", "rewrite": "/v2\\g<1>"}}),
        VS_KEY,
        "spec.http[0].rewrite.uriRegexRewrite.rewrite",
        "invalid escape \\g (RE2 takes",
    ),
    (
        "rewrite-group-beyond-the-regex",
        http(rewrite={"uriRegexRewrite": {"match": "^/books(/.*)$", "rewrite": "/v2\\2"}}),
        VS_KEY,
        "spec.http[0].rewrite.uriRegexRewrite.rewrite",
        "refers to group \\2; the regex has 1",
    ),
    (
        "regex-class-re2-refuses",  # Python reads it (a nested set); RE2, which runs it, does not
        match(uri={"regex": "/[[:foo:]]"}),
        VS_KEY,
        "spec.http[0].match[0].uri.regex",
        "invalid character class range: [:foo:] (RE2",
    ),
    (
        "regex-backreference-not-re2",
        match(headers={"x": {"regex": "(a+)-\\1"}}),
        VS_KEY,
        "spec.http[0].match[0].headers.x.regex",
        "a backreference is not RE2 syntax",
    ),
    (
        "regex-verbose-flag-not-re2",
        match(uri={"regex": "(?x)/books /v1"}),
        VS_KEY,
        "spec.http[0].match[0].uri.regex",
        "the inline flag x, a or L is not RE2 syntax",
    ),
    (
        "regex-end-of-string-not-re2",
        match(uri={"regex": "/books\\Z"}),
        VS_KEY,
        "spec.http[0].match[0].uri.regex",
        "RE2 writes \\z",
    ),
    (
        "regex-any-byte-refused-by-istio",  # C++ RE2 takes \C; Istio validates with Go's regexp, which does not
        match(uri={"regex": "/a\\Cb"}),
        VS_KEY,
        "spec.http[0].match[0].uri.regex",
        "\\C (any byte) is refused by Istio",
    ),
    (
        "regex-repeat-over-1000-not-re2",
        match(uri={"regex": "/a{1,1001}"}),
        VS_KEY,
        "spec.http[0].match[0].uri.regex",
        "a repeat count over 1000",
    ),
    (
        "rewrite-regex-possessive-not-re2",
        http(rewrite={"uriRegexRewrite": {"match": "/a++", "rewrite": "/b"}}),
        VS_KEY,
        "spec.http[0].rewrite.uriRegexRewrite.match",
        "a possessive quantifier is not RE2 syntax",
    ),
    (
        "bad-header-regex",
        match(headers={"x": {"regex": "*x"}}),
        VS_KEY,
        "spec.http[0].match[0].headers.x.regex",
        "invalid regex",
    ),
    (
        "header-op-value-crlf",
        http(headers={"request": {"set": {"x-a": "1\r\nx-injected: 2"}}}),
        VS_KEY,
        "spec.http[0].headers.request.set.x-a",
        "invalid header value",
    ),
    (
        "header-op-value-not-latin1",
        http(headers={"response": {"add": {"x-mark": "\u2713"}}}),
        VS_KEY,
        "spec.http[0].headers.response.add.x-mark",
        "invalid header value",
    ),
    (
        "header-op-name",
        http(route=[{**route_to(), "headers": {"request": {"remove": ["x a"]}}}]),
        VS_KEY,
        "spec.http[0].route[0].headers.request.remove[0]",
        "invalid header name",
    ),
    (
        "stringmatch-two",
        match(uri={"exact": "/a", "prefix": "/a"}),
        VS_KEY,
        "spec.http[0].match[0].uri",
        "only one of exact, prefix or regex",
    ),
    (
        "stringmatch-none",
        match(uri={}),
        VS_KEY,
        "spec.http[0].match[0].uri",
        "one of exact, prefix or regex is required",
    ),
    ("match-port-0", match(port=0), VS_KEY, "spec.http[0].match[0].port", "must be >= 1"),
    ("match-port-high", match(port=65536), VS_KEY, "spec.http[0].match[0].port", "must be <= 65535"),
    (
        "dest-port-high",
        vs([{"route": [{"destination": {"host": "r", "port": {"number": 70000}}}]}]),
        VS_KEY,
        "spec.http[0].route[0].destination.port.number",
        "must be <= 65535",
    ),
    (
        "abort-status-high",
        http(fault={"abort": {"httpStatus": 600}}),
        VS_KEY,
        "spec.http[0].fault.abort.httpStatus",
        "must be <= 599",
    ),
    (
        "abort-status-low",
        http(fault={"abort": {"httpStatus": 199}}),
        VS_KEY,
        "spec.http[0].fault.abort.httpStatus",
        "must be >= 200",
    ),
    (
        "abort-no-error",
        http(fault={"abort": {"percentage": {"value": 1}}}),
        VS_KEY,
        "spec.http[0].fault.abort",
        "exactly one of httpStatus",
    ),
    ("fault-empty", http(fault={}), VS_KEY, "spec.http[0].fault", "delay or an abort"),
    (
        "delay-no-fixed",
        http(fault={"delay": {"percentage": {"value": 1}}}),
        VS_KEY,
        "spec.http[0].fault.delay",
        "fixedDelay",
    ),
    (
        "delay-percentage-high",
        http(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": 100.5}}}),
        VS_KEY,
        "spec.http[0].fault.delay.percentage.value",
        "must be <= 100",
    ),
    (
        "delay-percent-negative",
        http(fault={"delay": {"fixedDelay": "1s", "percent": -1}}),
        VS_KEY,
        "spec.http[0].fault.delay.percent",
        "must be >= 0",
    ),
    (
        "mirror-percentage-negative",
        http(mirror={"host": "m"}, mirrorPercentage={"value": -1}),
        VS_KEY,
        "spec.http[0].mirrorPercentage.value",
        "must be >= 0",
    ),
    (
        "mirrors-percentage-high",
        http(mirrors=[{"destination": {"host": "m"}, "percentage": {"value": 101}}]),
        VS_KEY,
        "spec.http[0].mirrors[0].percentage.value",
        "must be <= 100",
    ),
    (
        "mirror-and-mirrors",
        http(mirror={"host": "m"}, mirrors=[{"destination": {"host": "m"}}]),
        VS_KEY,
        "spec.http[0].mirrors",
        "both mirror and mirrors",
    ),
    (
        "redirect-with-route",
        http(redirect={"uri": "/x"}),
        VS_KEY,
        "spec.http[0].redirect",
        "cannot contain both route and redirect",
    ),
    ("redirect-empty", vs([{"redirect": {}}]), VS_KEY, "spec.http[0].redirect", "redirect must specify"),
    (
        "redirect-code",
        vs([{"redirect": {"uri": "/x", "redirectCode": 200}}]),
        VS_KEY,
        "spec.http[0].redirect.redirectCode",
        "must be >= 300",
    ),
    (
        "direct-response-no-status",
        vs([{"directResponse": {"body": {"string": "x"}}}]),
        VS_KEY,
        "spec.http[0].directResponse.status",
        "required",
    ),
    (
        "direct-response-with-route",
        http(directResponse={"status": 200}),
        VS_KEY,
        "spec.http[0].directResponse",
        "both route and directResponse",
    ),
    (
        "no-action",
        vs([{"match": [{"uri": {"prefix": "/"}}]}]),
        VS_KEY,
        "spec.http[0]",
        "one of route, redirect, directResponse or delegate",
    ),
    (
        "rewrite-both",
        http(rewrite={"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}}),
        VS_KEY,
        "spec.http[0].rewrite",
        "only contain one of uri or uriRegexRewrite",
    ),
    (
        "retry-on-bad",
        http(retries={"attempts": 1, "retryOn": "5xx,sometimes"}),
        VS_KEY,
        "spec.http[0].retries.retryOn",
        "'sometimes' is not a valid retryOn policy",
    ),
    (
        "retry-attempts-negative",
        http(retries={"attempts": -1}),
        VS_KEY,
        "spec.http[0].retries.attempts",
        "must be >= 0",
    ),
    (
        "destination-missing",
        vs([{"route": [{"weight": 100}]}]),
        VS_KEY,
        "spec.http[0].route[0].destination",
        "required",
    ),
    (
        "host-empty",
        vs([{"route": [route_to()]}], hosts=[""]),
        VS_KEY,
        "spec.hosts[0]",
        "host must not be empty",
    ),
    (
        "host-wildcard-middle",
        vs([{"route": [route_to()]}], hosts=["foo.*.com"]),
        VS_KEY,
        "spec.hosts[0]",
        "invalid",
    ),
    (
        "host-wildcard-suffix",
        vs([{"route": [route_to()]}], hosts=["foo*"]),
        VS_KEY,
        "spec.hosts[0]",
        "a wildcard may only be a leading '*'",
    ),
    ("host-mesh", vs([{"route": [route_to()]}], hosts=["mesh"]), VS_KEY, "spec.hosts[0]", "reserved"),
    ("no-rules", vs(), VS_KEY, "spec", "http, tcp or tls must be provided"),
    (
        "delegate-with-gateways",
        doc("VirtualService", {"gateways": ["gw"], "http": [{"route": [route_to()]}]}),
        VS_KEY,
        "spec.hosts",
        "at least one host",
    ),
    (
        "tls-no-sni",
        vs(tls=[{"match": [{"sniHosts": []}], "route": [route_to()]}]),
        VS_KEY,
        "spec.tls[0].match[0].sniHosts",
        "at least one SNI host",
    ),
    (
        "tls-no-route",
        vs(tls=[{"match": [{"sniHosts": ["a.com"]}]}]),
        VS_KEY,
        "spec.tls[0].route",
        "route is required",
    ),
    (
        "tcp-bad-subnet",
        vs(tcp=[{"match": [{"destinationSubnets": ["10.0.0.0/99"]}], "route": [route_to()]}]),
        VS_KEY,
        "spec.tcp[0].match[0].destinationSubnets[0]",
        "not an IP address or CIDR",
    ),
    (
        "export-to-bad",
        vs([{"route": [route_to()]}], exportTo=["Not_A_Namespace"]),
        VS_KEY,
        "spec.exportTo[0]",
        "invalid exportTo",
    ),
    (
        "source-labels-bad",
        match(sourceLabels={"app": "a b"}),
        VS_KEY,
        "spec.http[0].match[0].sourceLabels.app",
        "invalid label value",
    ),
    # --- DestinationRule
    (
        "subset-name-not-dns",
        dr(subsets=[{"name": "V_1", "labels": {"version": "v1"}}]),
        DR_KEY,
        "spec.subsets[0].name",
        "invalid subset name",
    ),
    (
        "subset-name-dup",
        dr(subsets=[{"name": "v1"}, {"name": "v1"}]),
        DR_KEY,
        "spec.subsets[1].name",
        "duplicate",
    ),
    (
        "subset-name-missing",
        dr(subsets=[{"labels": {"version": "v1"}}]),
        DR_KEY,
        "spec.subsets[0].name",
        "required",
    ),
    ("dr-host-missing", doc("DestinationRule", {"subsets": []}), DR_KEY, "spec.host", "required"),
    ("dr-host-empty", dr(host=""), DR_KEY, "spec.host", "host must not be empty"),
    (
        "lb-simple-and-hash",
        tp(loadBalancer={"simple": "RANDOM", "consistentHash": {"useSourceIp": True}}),
        DR_KEY,
        "spec.trafficPolicy.loadBalancer",
        "only one of simple or consistentHash",
    ),
    (
        "lb-simple-unknown",
        tp(loadBalancer={"simple": "FASTEST"}),
        DR_KEY,
        "spec.trafficPolicy.loadBalancer.simple",
        "invalid value 'FASTEST'",
    ),
    (
        "hash-two-keys",
        tp(loadBalancer={"consistentHash": {"useSourceIp": True, "httpHeaderName": "x"}}),
        DR_KEY,
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "only one of httpHeaderName",
    ),
    (
        "hash-cookie-no-name",
        tp(loadBalancer={"consistentHash": {"httpCookie": {"ttl": "1s"}}}),
        DR_KEY,
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        "required",
    ),
    (
        "warmup-min-percent",
        tp(loadBalancer={"warmup": {"duration": "1s", "minimumPercent": 101}}),
        DR_KEY,
        "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
        "must be <= 100",
    ),
    (
        "warmup-no-duration",
        tp(loadBalancer={"warmup": {"aggression": 2}}),
        DR_KEY,
        "spec.trafficPolicy.loadBalancer.warmup.duration",
        "required",
    ),
    (
        "warmup-aggression",
        tp(loadBalancer={"warmup": {"duration": "1s", "aggression": 0.5}}),
        DR_KEY,
        "spec.trafficPolicy.loadBalancer.warmup.aggression",
        "must be >= 1",
    ),
    (
        "outlier-max-ejection",
        tp(outlierDetection={"maxEjectionPercent": 101}),
        DR_KEY,
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "must be <= 100",
    ),
    (
        "outlier-interval",
        tp(outlierDetection={"interval": "10"}),
        DR_KEY,
        "spec.trafficPolicy.outlierDetection.interval",
        "invalid duration",
    ),
    (
        "outlier-5xx-negative",
        tp(outlierDetection={"consecutive5xxErrors": -1}),
        DR_KEY,
        "spec.trafficPolicy.outlierDetection.consecutive5xxErrors",
        "must be >= 0",
    ),
    (
        "pool-negative",
        tp(connectionPool={"tcp": {"maxConnections": -1}}),
        DR_KEY,
        "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        "must be >= 0",
    ),
    (
        "pool-h2-policy",
        tp(connectionPool={"http": {"h2UpgradePolicy": "SOMETIMES"}}),
        DR_KEY,
        "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
        "invalid value",
    ),
    (
        "port-level-no-port",
        tp(portLevelSettings=[{"loadBalancer": {"simple": "RANDOM"}}]),
        DR_KEY,
        "spec.trafficPolicy.portLevelSettings[0].port",
        "must specify a port",
    ),
    (
        "tls-mutual-no-cert",
        tp(tls={"mode": "MUTUAL", "privateKey": "/k"}),
        DR_KEY,
        "spec.trafficPolicy.tls.clientCertificate",
        "required for MUTUAL",
    ),
    (
        "tls-istio-mutual-cert",
        tp(tls={"mode": "ISTIO_MUTUAL", "clientCertificate": "/c"}),
        DR_KEY,
        "spec.trafficPolicy.tls",
        "ISTIO_MUTUAL",
    ),
    (
        "subset-policy",
        dr(subsets=[{"name": "v1", "trafficPolicy": {"loadBalancer": {"simple": "NOPE"}}}]),
        DR_KEY,
        "spec.subsets[0].trafficPolicy.loadBalancer.simple",
        "invalid value",
    ),
    (
        "tunnel-port",
        tp(tunnel={"targetHost": "h", "targetPort": 0}),
        DR_KEY,
        "spec.trafficPolicy.tunnel.targetPort",
        "must be >= 1",
    ),
    (
        "locality-sum",
        tp(loadBalancer={"localityLbSetting": {"distribute": [{"from": "a", "to": {"b": 50}}]}}),
        DR_KEY,
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "sum to 100",
    ),
    # --- Gateway
    ("server-no-port", gw([{"hosts": ["*"]}]), GW_KEY, "spec.servers[0].port", "required"),
    (
        "server-no-hosts",
        gw([{"port": {"number": 80, "protocol": "HTTP"}}]),
        GW_KEY,
        "spec.servers[0].hosts",
        "required",
    ),
    ("server-empty-hosts", server(hosts=[]), GW_KEY, "spec.servers[0].hosts", "at least one host"),
    ("server-bad-host", server(hosts=["a/b/c"]), GW_KEY, "spec.servers[0].hosts[0]", "invalid"),
    (
        "server-port-zero",
        server(port={"number": 0, "protocol": "HTTP"}),
        GW_KEY,
        "spec.servers[0].port.number",
        "must be >= 1",
    ),
    (
        "server-port-protocol",
        server(port={"number": 80, "protocol": "SMTP"}),
        GW_KEY,
        "spec.servers[0].port.protocol",
        "invalid protocol",
    ),
    (
        "server-https-no-tls",
        server(port={"number": 443, "protocol": "HTTPS"}),
        GW_KEY,
        "spec.servers[0].tls",
        "must have TLS settings",
    ),
    (
        "server-simple-no-cert",
        server(port={"number": 443, "protocol": "HTTPS"}, tls={"mode": "SIMPLE"}),
        GW_KEY,
        "spec.servers[0].tls.serverCertificate",
        "requires a server certificate",
    ),
    ("servers-empty", gw([]), GW_KEY, "spec.servers", "at least one server"),
    (
        "servers-missing",
        doc("Gateway", {"selector": {}}, name="bookinfo-gateway"),
        GW_KEY,
        "spec.servers",
        "required",
    ),
    # --- ServiceEntry
    ("se-no-hosts", se(ports=SE_BASE["ports"]), SE_KEY, "spec.hosts", "required"),
    ("se-empty-hosts", se(hosts=[]), SE_KEY, "spec.hosts", "at least one host"),
    ("se-wildcard", se(hosts=["*"]), SE_KEY, "spec.hosts[0]", "hostname cannot be wildcard"),
    (
        "se-static-no-endpoints",
        se(**SE_BASE, resolution="STATIC"),
        SE_KEY,
        "spec.endpoints",
        "STATIC resolution needs endpoints",
    ),
    (
        "se-static-hostname",
        se(**SE_BASE, resolution="STATIC", endpoints=[{"address": "a.example.com"}]),
        SE_KEY,
        "spec.endpoints[0].address",
        "must be an IP address",
    ),
    (
        "se-none-endpoints",
        se(**SE_BASE, resolution="NONE", endpoints=[{"address": "1.1.1.1"}]),
        SE_KEY,
        "spec.endpoints",
        "NONE mode cannot set endpoints",
    ),
    (
        "se-selector-and-endpoints",
        se(
            **SE_BASE,
            resolution="STATIC",
            workloadSelector={"labels": {"a": "b"}},
            endpoints=[{"address": "1.1.1.1"}],
        ),
        SE_KEY,
        "spec.workloadSelector",
        "only one of WorkloadSelector or Endpoints",
    ),
    (
        "se-port-zero",
        se(hosts=["a.com"], ports=[{"number": 0, "name": "p"}]),
        SE_KEY,
        "spec.ports[0].number",
        "port must be between 1-65535",
    ),
    (
        "se-dup-port",
        se(hosts=["a.com"], ports=[{"number": 1, "name": "a"}, {"number": 1, "name": "b"}]),
        SE_KEY,
        "spec.ports[1].number",
        "port number cannot be duplicated",
    ),
    (
        "se-bad-address",
        se(**SE_BASE, addresses=["not-an-ip"]),
        SE_KEY,
        "spec.addresses[0]",
        "invalid address",
    ),
    ("se-resolution-bad", se(**SE_BASE, resolution="MAGIC"), SE_KEY, "spec.resolution", "invalid value"),
    (
        "se-dns-wildcard",
        se(hosts=["*.example.com"], resolution="DNS"),
        SE_KEY,
        "spec.hosts[0]",
        "needs endpoints",
    ),
    (
        "se-endpoint-port-unknown",
        se(**SE_BASE, resolution="STATIC", endpoints=[{"address": "1.1.1.1", "ports": {"http": 80}}]),
        SE_KEY,
        "spec.endpoints[0].ports.http",
        "not defined by the service entry",
    ),
    (
        "se-selector-wildcard",
        se(**SE_BASE, workloadSelector={"labels": {"app": "*"}}),
        SE_KEY,
        "spec.workloadSelector.labels.app",
        "wildcard is not supported in selector",
    ),
    # --- envelope
    (
        "name-missing",
        {**vs([{"route": [route_to()]}]), "metadata": {"namespace": "bookinfo"}},
        "VirtualService/bookinfo/?",
        "metadata.name",
        "required",
    ),
    (
        "name-upper",
        {**vs([{"route": [route_to()]}]), "metadata": {"name": "Reviews", "namespace": "bookinfo"}},
        "VirtualService/bookinfo/Reviews",
        "metadata.name",
        "invalid name",
    ),
    (
        "api-version-bad",
        {**vs([{"route": [route_to()]}]), "apiVersion": "networking.istio.io/v2"},
        VS_KEY,
        "apiVersion",
        "unsupported apiVersion",
    ),
    (
        "api-version-other-group",
        {**vs([{"route": [route_to()]}]), "apiVersion": "gateway.networking.k8s.io/v1"},
        VS_KEY,
        "apiVersion",
        "unknown apiVersion",
    ),
    ("kind-unknown", doc("Sidecar", {}), "Sidecar/bookinfo/reviews", "kind", "unknown kind 'Sidecar'"),
    (
        "kind-missing",
        {"apiVersion": "networking.istio.io/v1", "metadata": {"name": "x"}},
        "?/default/x",
        "kind",
        "required",
    ),
    (
        "security-kind-networking-group",
        doc("PeerAuthentication", {}, api_version="networking.istio.io/v1"),
        "PeerAuthentication/bookinfo/reviews",
        "apiVersion",
        "expected security.istio.io/<version>",
    ),
    (
        "security-kind-unknown-version",
        doc("AuthorizationPolicy", {}, api_version="security.istio.io/v1alpha3"),
        "AuthorizationPolicy/bookinfo/reviews",
        "apiVersion",
        "expected one of security.istio.io/v1, security.istio.io/v1beta1",
    ),
    ("spec-missing", {k: v for k, v in vs().items() if k != "spec"}, VS_KEY, "spec", "required"),
]


@pytest.mark.parametrize(
    ("body", "resource", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_refused_with_file_resource_and_path(body: dict, resource: str, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(to_yaml(body), FILE)
    err = info.value
    assert (err.file, err.resource, err.path) == (FILE, resource, path), str(err)
    assert fragment in err.message
    assert str(err).startswith(f"{FILE}: {resource}: {path}: {err.message}")


def test_message_format_matches_the_contract() -> None:
    body = vs([{"route": [route_to(weight=0), route_to(subset="v2", weight=0)]}])
    with pytest.raises(ConfigError) as info:
        load_text(to_yaml(body), FILE)
    assert str(info.value) == f"{FILE}: {VS_KEY}: spec.http[0].route: total weight is 0"
    assert isinstance(info.value, ValueError)


def test_all_problems_are_kept() -> None:
    body = vs([{"route": [route_to()], "foo": 1, "bar": 2}])
    with pytest.raises(ConfigError) as info:
        load_text(to_yaml(body), FILE)
    assert {p for p, _ in info.value.problems} == {"spec.http[0].foo", "spec.http[0].bar"}
    assert str(info.value).endswith("(and 1 more)")


def test_second_document_error_names_its_resource() -> None:
    good = vs([{"route": [route_to()]}])
    bad = {**dr(subsets=[{"name": "v_1"}])}
    with pytest.raises(ConfigError) as info:
        load_text(to_yaml(good, bad), FILE)
    assert info.value.resource == DR_KEY


def test_config_error_pickles() -> None:
    import pickle

    err = ConfigError("boom", file="f", resource="r", path="p")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.file, copy.resource, copy.path, copy.message, str(copy)) == ("f", "r", "p", "boom", str(err))
