"""AuthorizationPolicy: actions, rules (from/to/when), the values they take, and Istio's rules."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.api import AuthorizationPolicy, ConfigError, dump, load_document
from tests.mesh.api.conftest import FILE, ap, security

KEY = "AuthorizationPolicy/bookinfo/policy"
SELECTOR = {"matchLabels": {"app": "books"}}
DRY_RUN = "istio.io/dry-run"


def load(body: dict[str, Any]) -> AuthorizationPolicy:
    resource = load_document(body, FILE)
    assert isinstance(resource, AuthorizationPolicy)
    assert load_document(dump(resource)) == resource
    return resource


def refused(body: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_document(body, FILE)
    assert (info.value.file, info.value.resource) == (FILE, KEY)
    return info.value


def source(**fields: Any) -> dict[str, Any]:
    return ap(rules=[{"from": [{"source": fields}]}])


def operation(**fields: Any) -> dict[str, Any]:
    return ap(rules=[{"to": [{"operation": fields}]}])


def when(key: str, values: list[str] | None = None, **more: Any) -> dict[str, Any]:
    cond: dict[str, Any] = {"key": key, **more}
    if values is not None:
        cond["values"] = values
    return ap(rules=[{"when": [cond]}])


def test_attributes_as_built() -> None:
    policy = load(
        ap(
            selector=SELECTOR,
            action="DENY",
            rules=[
                {
                    "from": [
                        {
                            "source": {
                                "principals": ["cluster.local/ns/bookinfo/sa/gw"],
                                "notIpBlocks": ["10.0.0.0/8"],
                            }
                        }
                    ],
                    "to": [{"operation": {"methods": ["GET"], "ports": ["9080"], "notPaths": ["/admin*"]}}],
                    "when": [{"key": "request.headers[end-user]", "values": ["jason"], "notValues": ["bob"]}],
                }
            ],
        )
    )
    spec = policy.spec
    assert spec.selector is not None and spec.selector.match_labels == {"app": "books"}
    assert (spec.action, spec.provider, spec.target_ref, spec.target_refs) == ("DENY", None, None, None)
    (rule,) = spec.rules or []
    assert rule.from_ is not None and rule.from_[0].source.principals == ["cluster.local/ns/bookinfo/sa/gw"]
    assert rule.from_[0].source.not_ip_blocks == ["10.0.0.0/8"]
    assert rule.to is not None and rule.to[0].operation.ports == ["9080"]
    assert rule.to[0].operation.not_paths == ["/admin*"]
    assert rule.when is not None
    assert (rule.when[0].key, rule.when[0].values, rule.when[0].not_values) == (
        "request.headers[end-user]",
        ["jason"],
        ["bob"],
    )
    assert "from" in dump(policy)["spec"]["rules"][0]  # the YAML name, not the Python one
    assert policy.dry_run is False


@pytest.mark.parametrize(
    "spec",
    [
        {},  # deny everything the namespace's workloads receive
        {"rules": [{}]},  # allow everything
        {"action": "ALLOW"},
        {"action": "DENY", "rules": [{}]},
        {"action": "AUDIT"},
        {"action": "AUDIT", "rules": [{}]},
        {"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]},
        {
            "action": "CUSTOM",
            "provider": {"name": "ext"},
            "rules": [{"to": [{"operation": {"paths": ["/a"]}}]}],
        },
        {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}},
        {
            "targetRefs": [
                {"kind": "Service", "name": "books"},
                {"group": "core", "kind": "Service", "name": "b"},
            ]
        },
        {"targetRefs": [{"group": "networking.istio.io", "kind": "ServiceEntry", "name": "ext"}]},
        {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "GatewayClass", "name": "istio"}]},
        {"selector": {}},
    ],
)
def test_valid_specs(spec: dict) -> None:
    assert load(ap(**spec)).spec.model_dump(by_alias=True, exclude_unset=True) == spec


@pytest.mark.parametrize(
    "fields",
    [
        {"ipBlocks": ["1.2.3.4", "5.6.0.0/16", "2001:db8::/32", "::1", "1.2.3.4/0", "1.2.3.4/32"]},
        {"remoteIpBlocks": ["10.0.0.0/8"], "notRemoteIpBlocks": ["10.1.0.0/16"]},
        {"serviceAccounts": ["sa", "ns/sa"], "notServiceAccounts": ["ns/other"]},
        {"serviceAccounts": [f"ns/sa{i}" for i in range(16)]},
        {"serviceAccounts": ["sa"], "requestPrincipals": ["iss/sub"], "ipBlocks": ["1.1.1.1"]},
        {"principals": ["*"], "notPrincipals": ["a*"], "namespaces": ["*-prod"], "notNamespaces": ["x"]},
        {"requestPrincipals": ["*"], "notRequestPrincipals": ["evil/*"]},
    ],
)
def test_valid_sources(fields: dict) -> None:
    assert load(source(**fields))


@pytest.mark.parametrize(
    "fields",
    [
        {"ports": ["0", "80", "065535"], "notPorts": ["65535"]},
        {"hosts": ["*.example.com"], "notHosts": ["admin.example.com"]},
        {"methods": ["GET"], "notMethods": ["DELETE"]},
        {"paths": ["/exact", "/prefix/*", "*/suffix", "*", "/a/{*}/b", "/{**}/c", "/a/{**}"]},
        {"notPaths": ["/api/{*}/v1:get", "/x/{*}/{*}", "/{*}/{**}"]},
    ],
)
def test_valid_operations(fields: dict) -> None:
    assert load(operation(**fields))


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("request.headers[User-Agent]", ["curl*"]),
        ("request.experimental.inline.headers[x-a]", ["b"]),
        ("source.ip", ["10.0.0.1", "10.1.0.0/16"]),
        ("remote.ip", ["203.0.113.4"]),
        ("source.namespace", ["bookinfo"]),
        ("source.principal", ["cluster.local/ns/bookinfo/sa/gw"]),
        ("source.serviceAccount", ["bookinfo/gw"]),
        ("request.auth.principal", ["iss/sub"]),
        ("request.auth.audiences", ["books"]),
        ("request.auth.presenter", ["client"]),
        ("request.auth.claims[iss]", ["https://accounts.example.com"]),
        ("request.auth.claims[nested1][nested2]", ["x"]),
        ("destination.ip", ["10.0.0.1"]),
        ("destination.port", ["9080"]),
        ("connection.sni", ["books.example.com"]),
        ("experimental.envoy.filters.a.b[c]", ["d"]),
    ],
)
def test_every_supported_when_key(key: str, values: list[str]) -> None:
    assert load(when(key, values))
    assert load(when(key, notValues=values))


@pytest.mark.parametrize(
    ("annotation", "action", "dry_run"),
    [
        ("true", None, True),
        ("True", "ALLOW", True),
        ("1", "DENY", True),
        ("false", None, False),
        ("F", "DENY", False),
    ],
)
def test_dry_run_annotation(annotation: str, action: str | None, dry_run: bool) -> None:
    spec = {"rules": [{}]} | ({"action": action} if action else {})
    body = security("AuthorizationPolicy", spec, annotations={DRY_RUN: annotation})
    assert load(body).dry_run is dry_run


def test_dry_run_annotation_written_as_a_yaml_boolean() -> None:
    body = security("AuthorizationPolicy", {"rules": [{}]}, annotations={DRY_RUN: True})
    assert load(body).dry_run is True


SPEC_CASES = [
    # selection
    (
        {"selector": SELECTOR, "targetRef": {"kind": "Service", "name": "a"}},
        "spec",
        "only one of targetRefs or selector",
    ),
    ({"selector": SELECTOR, "targetRefs": []}, "spec", "only one of"),
    (
        {"targetRef": {"kind": "Service", "name": "a", "namespace": "other"}},
        "spec.targetRef.namespace",
        "cross namespace",
    ),
    ({"targetRef": {"kind": "Pod", "name": "a"}}, "spec.targetRef", "targetRef must be to one of"),
    (
        {"targetRef": {"group": "apps", "kind": "Service", "name": "a"}},
        "spec.targetRef",
        "but was apps/Service",
    ),
    ({"targetRef": {"kind": "Service"}}, "spec.targetRef.name", "required"),
    ({"targetRef": {"name": "a"}}, "spec.targetRef.kind", "required"),
    ({"targetRef": {"kind": "Service", "name": ""}}, "spec.targetRef.name", "must not be empty"),
    ({"targetRef": {"kind": "", "name": "a"}}, "spec.targetRef.kind", "must not be empty"),
    ({"targetRef": {"kind": "Serv_ice", "name": "a"}}, "spec.targetRef.kind", "invalid kind"),
    (
        {"targetRef": {"group": "Gateway.API", "kind": "Gateway", "name": "a"}},
        "spec.targetRef.group",
        "invalid group",
    ),
    (
        {"targetRefs": [{"kind": "Service", "name": f"s{i}"} for i in range(17)]},
        "spec.targetRefs",
        "at most 16",
    ),
    ({"selector": {"matchLabels": {"*": "a"}}}, "spec.selector.matchLabels.*", "wildcard"),
    # action and provider
    ({"action": "allow"}, "spec.action", "invalid value 'allow'"),
    ({"action": "CUSTOM", "provider": {"name": "ext"}}, "spec.rules", "CUSTOM action without rules"),
    ({"action": "CUSTOM", "rules": [{}]}, "spec.provider.name", "must not be empty"),
    ({"action": "CUSTOM", "provider": {}, "rules": [{}]}, "spec.provider.name", "must not be empty"),
    (
        {"action": "CUSTOM", "provider": {"name": ""}, "rules": [{}]},
        "spec.provider.name",
        "must not be empty",
    ),
    (
        {"provider": {"name": "ext"}, "rules": [{}]},
        "spec.provider",
        "only be set with action CUSTOM, found ALLOW",
    ),
    ({"action": "DENY", "provider": {"name": "e"}, "rules": [{}]}, "spec.provider", "found DENY"),
    ({"action": "DENY"}, "spec.rules", "DENY action without rules is meaningless"),
    ({"rules": [{} for _ in range(513)]}, "spec.rules", "at most 512"),
    ({"rules": [None]}, "spec.rules[0]", "invalid type"),
    (
        {"rules": [{"to": [{"operation": {"paths": ["/"]}}], "form": []}]},
        "spec.rules[0].form",
        "unknown field",
    ),
]

CUSTOM = {"action": "CUSTOM", "provider": {"name": "ext"}}
CUSTOM_CASES = [
    (
        {**CUSTOM, "rules": [{"from": [{"source": {field: ["x"]}}]}]},
        f"spec.rules[0].from[0].source.{field}",
        "not supported with CUSTOM action",
    )
    for field in (
        "namespaces",
        "notNamespaces",
        "serviceAccounts",
        "notServiceAccounts",
        "principals",
        "notPrincipals",
        "requestPrincipals",
        "notRequestPrincipals",
    )
] + [
    (
        {**CUSTOM, "rules": [{"when": [{"key": key, "values": ["x"]}]}]},
        "spec.rules[0].when[0].key",
        "with CUSTOM",
    )
    for key in ("source.namespace", "source.serviceAccount", "source.principal", "request.auth.claims[iss]")
]

RULE_CASES = [
    ({"from": []}, "spec.rules[0].from", "from must not be empty"),
    ({"to": []}, "spec.rules[0].to", "to must not be empty"),
    ({"from": [{}]}, "spec.rules[0].from[0].source", "required"),
    ({"from": [None]}, "spec.rules[0].from[0]", "invalid type"),
    ({"to": [{}]}, "spec.rules[0].to[0].operation", "required"),
    ({"from": [{"source": {}}]}, "spec.rules[0].from[0].source", "must not be empty"),
    ({"from": [{"source": {"principals": []}}]}, "spec.rules[0].from[0].source", "must not be empty"),
    ({"to": [{"operation": {}}]}, "spec.rules[0].to[0].operation", "must not be empty"),
    (
        {"to": [{"operation": {"hosts": [], "ports": []}}]},
        "spec.rules[0].to[0].operation",
        "must not be empty",
    ),
    ({"from": [{"source": {"principals": ["a"]}}] * 513}, "spec.rules[0].from", "at most 512"),
]

S = "spec.rules[0].from[0].source"
SOURCE_CASES = [
    ({"serviceAccounts": ["ns/sa"], "namespaces": ["ns"]}, S, "cannot set serviceAccounts with namespaces"),
    (
        {"serviceAccounts": ["sa"], "principals": ["p"]},
        S,
        "cannot set serviceAccounts with namespaces or principals",
    ),
    ({"notServiceAccounts": ["sa"], "notNamespaces": ["n"]}, S, "cannot set serviceAccounts"),
    ({"serviceAccounts": [], "notPrincipals": ["p"]}, S, "cannot set serviceAccounts"),
    ({"serviceAccounts": ["*"]}, f"{S}.serviceAccounts[0]", "wildcard"),
    ({"serviceAccounts": ["a/b/c"]}, f"{S}.serviceAccounts[0]", "expected format"),
    ({"serviceAccounts": ["/sa"]}, f"{S}.serviceAccounts[0]", "empty namespace"),
    ({"notServiceAccounts": ["ns/"]}, f"{S}.notServiceAccounts[0]", "empty serviceAccount"),
    ({"serviceAccounts": ["ok", ""]}, f"{S}.serviceAccounts[1]", "empty value not allowed"),
    ({"serviceAccounts": ["a" * 321]}, f"{S}.serviceAccounts[0]", "cannot exceed 320"),
    ({"serviceAccounts": [f"s{i}" for i in range(17)]}, f"{S}.serviceAccounts", "more than 16"),
    *(
        (
            {field: ["1.1.1.1" if field.lower().endswith("ipblocks") else "ok", ""]},
            f"{S}.{field}[1]",
            "empty value",
        )
        for field in (
            "principals",
            "notPrincipals",
            "requestPrincipals",
            "notRequestPrincipals",
            "namespaces",
            "notNamespaces",
            "ipBlocks",
            "notIpBlocks",
            "remoteIpBlocks",
            "notRemoteIpBlocks",
        )
    ),
    ({"ipBlocks": ["300.1.1.1"]}, f"{S}.ipBlocks[0]", "bad IP address"),
    ({"ipBlocks": ["example.com"]}, f"{S}.ipBlocks[0]", "bad IP address"),
    ({"notIpBlocks": ["1.2.3.4/33"]}, f"{S}.notIpBlocks[0]", "bad CIDR range"),
    ({"remoteIpBlocks": ["1.2.3.0/255.255.255.0"]}, f"{S}.remoteIpBlocks[0]", "bad CIDR range"),
    ({"notRemoteIpBlocks": ["::1/129"]}, f"{S}.notRemoteIpBlocks[0]", "bad CIDR range"),
    ({"ipBlocks": ["1.2.3.4/"]}, f"{S}.ipBlocks[0]", "bad CIDR range"),
    ({"principals": "a"}, f"{S}.principals", "invalid type"),
    ({"principal": ["a"]}, f"{S}.principal", "unknown field"),
]

OP = "spec.rules[0].to[0].operation"
OPERATION_CASES = [
    *(
        ({field: ["ok", ""]}, f"{OP}.{field}[1]", "empty value not allowed")
        for field in ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")
    ),
    ({"ports": [""]}, f"{OP}.ports[0]", "empty value not allowed"),
    ({"ports": ["http"]}, f"{OP}.ports[0]", "bad port"),
    ({"ports": ["65536"]}, f"{OP}.ports[0]", "bad port"),
    ({"notPorts": ["-1"]}, f"{OP}.notPorts[0]", "bad port"),
    ({"notPorts": [" 80"]}, f"{OP}.notPorts[0]", "bad port"),
    ({"ports": [80]}, f"{OP}.ports[0]", "invalid type"),  # Istio's ports are strings
    ({"paths": ["/{**}/{*}"]}, f"{OP}.paths[0]", "{**} is not the last operator"),
    ({"paths": ["/{**}/a/{**}"]}, f"{OP}.paths[0]", "{**} is not the last operator"),
    ({"notPaths": ["/{name}"]}, f"{OP}.notPaths[0]", "outside a path template"),
    ({"paths": ["/a{*}"]}, f"{OP}.paths[0]", "outside a path template"),
    ({"paths": ["/{*}/a b"]}, f"{OP}.paths[0]", "not a valid literal"),
    ({"paths": ["{*}/a"]}, f"{OP}.paths[0]", "a path template starts with '/'"),
]

W = "spec.rules[0].when[0]"
WHEN_CASES = [
    ({"key": "", "values": ["a"]}, f"{W}.key", "key must not be empty"),
    ({"values": ["a"]}, f"{W}.key", "required"),
    ({"key": "source.ip"}, W, "at least one of values or notValues must be set for key source.ip"),
    ({"key": "source.ip", "values": [], "notValues": []}, W, "at least one of values or notValues"),
    ({"key": "request.headers", "values": ["a"]}, f"{W}.key", "should have format a[b]"),
    ({"key": "request.headers[]", "values": ["a"]}, f"{W}.key", "should have format a[b]"),
    ({"key": "request.auth.claims[iss", "values": ["a"]}, f"{W}.key", "should have format a[b]"),
    ({"key": "experimental.envoy.filters.x", "values": ["a"]}, f"{W}.key", "should have format a[b]"),
    ({"key": "source.ipv6", "values": ["a"]}, f"{W}.key", "unknown attribute: source.ipv6"),
    ({"key": "request.method", "values": ["GET"]}, f"{W}.key", "unknown attribute"),
    ({"key": "destination.namespace", "values": ["a"]}, f"{W}.key", "replaced by the metadata.namespace"),
    ({"key": "destination.labels[app]", "values": ["a"]}, f"{W}.key", "replaced by the workload selector"),
    ({"key": "destination.name", "values": ["a"]}, f"{W}.key", "only supported in v1alpha1"),
    ({"key": "destination.user", "values": ["a"]}, f"{W}.key", "only supported in v1alpha1"),
    ({"key": "source.ip", "values": ["10.0.0.1", "x"]}, f"{W}.values[1]", "bad IP address (x)"),
    ({"key": "destination.ip", "notValues": ["10.0.0.0/40"]}, f"{W}.notValues[0]", "bad CIDR range"),
    ({"key": "remote.ip", "values": ["a"]}, f"{W}.values[0]", "bad IP address"),
    ({"key": "destination.port", "notValues": ["99999"]}, f"{W}.notValues[0]", "bad port"),
    ({"key": "source.serviceAccount", "values": ["ns/*"]}, f"{W}.values[0]", "wildcard"),
    ({"key": "source.principal", "values": ["a", ""]}, f"{W}.values[1]", "empty value not allowed"),
    ({"key": "source.principal", "values": ["a"], "notValues": [""]}, f"{W}.notValues[0]", "empty value"),
]


@pytest.mark.parametrize(("spec", "path", "fragment"), SPEC_CASES + CUSTOM_CASES)
def test_refused_spec(spec: dict, path: str, fragment: str) -> None:
    err = refused(ap(**spec))
    assert err.path == path, str(err)
    assert fragment in err.message, str(err)


@pytest.mark.parametrize(("rule", "path", "fragment"), RULE_CASES)
def test_refused_rule(rule: dict, path: str, fragment: str) -> None:
    err = refused(ap(rules=[rule]))
    assert err.path == path, str(err)
    assert fragment in err.message, str(err)


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [(source(**f), p, m) for f, p, m in SOURCE_CASES]
    + [(operation(**f), p, m) for f, p, m in OPERATION_CASES]
    + [(ap(rules=[{"when": [c]}]), p, m) for c, p, m in WHEN_CASES],
)
def test_refused_values(body: dict, path: str, fragment: str) -> None:
    err = refused(body)
    assert err.path == path, str(err)
    assert fragment in err.message, str(err)


@pytest.mark.parametrize(
    ("annotation", "spec", "fragment"),
    [
        ("true", {"action": "AUDIT", "rules": [{}]}, "only supports action ALLOW/DENY, found action AUDIT"),
        ("false", {**CUSTOM, "rules": [{}]}, "found action CUSTOM"),
        ("yes", {"rules": [{}]}, "invalid value 'yes'"),
        ("", {"rules": [{}]}, "invalid value ''"),
    ],
)
def test_refused_dry_run_annotation(annotation: str, spec: dict, fragment: str) -> None:
    err = refused(security("AuthorizationPolicy", spec, annotations={DRY_RUN: annotation}))
    assert err.path == f"metadata.annotations.{DRY_RUN}", str(err)
    assert fragment in err.message
