"""What the data plane enforces of the security kinds (WEIR0001 warnings), and the valid Istio that
Weir refuses to apply (AuthorizationPolicy CUSTOM: `refuse_unsupported`, WEIR0002 in analyze)."""

from __future__ import annotations

import pytest

from mesh.api import ConfigError, analyze, load_document, refuse_unsupported, unenforced_fields, unsupported
from tests.mesh.api.conftest import ap, dr, gw, pa, ra

CUSTOM = ap(
    action="CUSTOM", provider={"name": "ext-authz"}, rules=[{"to": [{"operation": {"paths": ["/a"]}}]}]
)
FULL_SOURCE = {
    f: ["10.0.0.0/8"] if f.endswith(("IpBlocks", "ipBlocks")) else ["x"]
    for f in (
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
}
FULL_OPERATION = {
    "hosts": ["a"],
    "notHosts": ["b"],
    "ports": ["80"],
    "notPorts": ["81"],
    "methods": ["GET"],
    "notMethods": ["PUT"],
    "paths": ["/a"],
    "notPaths": ["/b"],
}


@pytest.mark.parametrize(
    "body",
    [
        pa(
            selector={"matchLabels": {"app": "a"}},
            mtls={"mode": "STRICT"},
            portLevelMtls={"80": {"mode": "DISABLE"}},
        ),
        ap(
            selector={"matchLabels": {"app": "a"}},
            action="DENY",
            rules=[
                {
                    "from": [{"source": FULL_SOURCE}],
                    "to": [{"operation": FULL_OPERATION}],
                    "when": [{"key": "request.headers[x]", "values": ["y"]}],
                },
                {},
            ],
        ),
        ap(action="AUDIT", rules=[{}]),
        ap(),
        ra(
            selector={"matchLabels": {"app": "a"}},
            jwtRules=[
                {
                    "issuer": "iss",
                    "audiences": ["a"],
                    "jwksUri": "https://e.com/k",
                    "fromHeaders": [{"name": "x", "prefix": "p"}],
                    "fromParams": ["t"],
                    "fromCookies": ["c"],
                    "forwardOriginalToken": True,
                    "outputPayloadToHeader": "x-p",
                    "outputClaimToHeaders": [{"header": "x-c", "claim": "c"}],
                    "timeout": "3s",
                },
                {"issuer": "iss2", "jwks": '{"keys": [{"kty": "oct", "k": "AAAA"}]}'},
            ],
        ),
        dr(
            trafficPolicy={
                "tls": {
                    "mode": "MUTUAL",
                    "clientCertificate": "/c.pem",
                    "privateKey": "/k.pem",
                    "caCertificates": "/ca.pem",
                    "sni": "reviews",
                    "subjectAltNames": ["spiffe://x"],
                    "insecureSkipVerify": False,
                },
                "portLevelSettings": [
                    {"port": {"number": 9080}, "tls": {"mode": "ISTIO_MUTUAL", "sni": "r"}}
                ],
            },
            subsets=[{"name": "v1", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}],
        ),
        gw(
            [
                {
                    "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                    "hosts": ["*"],
                    "tls": {
                        "mode": "MUTUAL",
                        "serverCertificate": "/s.pem",
                        "privateKey": "/k.pem",
                        "caCertificates": "/ca.pem",
                        "subjectAltNames": ["client"],
                        "minProtocolVersion": "TLSV1_2",
                    },
                },
                {
                    "port": {"number": 80, "name": "http", "protocol": "HTTP"},
                    "hosts": ["*"],
                    "tls": {"httpsRedirect": True},
                },
                {
                    "port": {"number": 8443, "name": "https-2", "protocol": "HTTPS"},
                    "hosts": ["*"],
                    "tls": {"mode": "SIMPLE", "credentialName": "bookinfo-cert"},
                },
            ]
        ),
    ],
    ids=["peerauth", "authz-deny", "authz-audit", "authz-empty", "reqauth", "dr-tls", "gateway-tls"],
)
def test_enforced_fields_raise_no_warning(body: dict) -> None:
    assert unenforced_fields(load_document(body)) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            ap(
                targetRef={"kind": "Service", "name": "books"},
                rules=[{"from": [{"source": {"serviceAccounts": ["gw"], "notServiceAccounts": ["x"]}}]}],
            ),
            ["spec.targetRef"],  # serviceAccounts are enforced (as principals)
        ),
        (ap(targetRefs=[{"kind": "Service", "name": "books"}]), ["spec.targetRefs"]),
        (CUSTOM, ["spec.provider"]),
        (
            ra(
                targetRef={"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
                jwtRules=[{"issuer": "iss", "spaceDelimitedClaims": ["scope"]}],
            ),
            ["spec.targetRef", "spec.jwtRules[0].spaceDelimitedClaims"],
        ),
        (
            dr(trafficPolicy={"tls": {"mode": "SIMPLE", "credentialName": "c", "caCrl": "/crl.pem"}}),
            ["spec.trafficPolicy.tls.credentialName", "spec.trafficPolicy.tls.caCrl"],
        ),
    ],
)
def test_unenforced_security_fields_are_named(body: dict, expected: list[str]) -> None:
    assert sorted(unenforced_fields(load_document(body))) == sorted(expected)


def test_custom_is_refused_with_a_clear_error() -> None:
    policy = load_document(CUSTOM, "custom.yaml")
    assert unsupported(policy) == [
        ("spec.action", "CUSTOM (external authorization) is not supported by Weir")
    ]
    with pytest.raises(ConfigError) as info:
        refuse_unsupported(policy, file="custom.yaml")
    assert str(info.value) == (
        "custom.yaml: AuthorizationPolicy/bookinfo/policy: spec.action: "
        "CUSTOM (external authorization) is not supported by Weir"
    )


@pytest.mark.parametrize(
    "body",
    [ap(), ap(action="ALLOW"), ap(action="DENY", rules=[{}]), ap(action="AUDIT"), pa(), ra(), dr()],
    ids=["authz-default", "allow", "deny", "audit", "peerauth", "reqauth", "destinationrule"],
)
def test_everything_else_is_admitted(body: dict) -> None:
    resource = load_document(body)
    assert unsupported(resource) == []
    refuse_unsupported(resource)


def test_analyze_reports_custom_as_an_error() -> None:
    messages = analyze([load_document(CUSTOM)])
    errors = [m for m in messages if m.level == "Error"]
    assert [(m.code, m.resource_key) for m in errors] == [("WEIR0002", "AuthorizationPolicy/bookinfo/policy")]
    assert "CUSTOM (external authorization) is not supported by Weir" in errors[0].text
    assert messages[0] == errors[0]  # errors first
