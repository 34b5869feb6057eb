"""RequestAuthentication: JWT rules, their keys and token locations, and Istio's rules for them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mesh.api import (
    ClaimToHeader,
    ConfigError,
    JWTHeader,
    PolicyTargetReference,
    RequestAuthentication,
    dump,
    load_document,
)
from tests.mesh.api.conftest import FILE, ra, security

KEY = "RequestAuthentication/bookinfo/policy"
ISSUER = "https://accounts.example.com"
RSA = {"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": "0vx7agoebGcQSuu", "e": "AQAB"}
EC = {
    "kty": "EC",
    "crv": "P-256",
    "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
    "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
}
JWKS = json.dumps({"keys": [RSA, EC]})


def rule(**fields: Any) -> dict[str, Any]:
    return ra(jwtRules=[{"issuer": ISSUER, **fields}])


def load(body: dict[str, Any]) -> RequestAuthentication:
    resource = load_document(body, FILE)
    assert isinstance(resource, RequestAuthentication)
    assert load_document(dump(resource)) == resource
    return resource


def refused(body: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_document(body, FILE)
    assert (info.value.file, info.value.resource) == (FILE, KEY)
    return info.value


def test_attributes_as_built() -> None:
    spec = load(
        ra(
            targetRefs=[{"kind": "Service", "name": "books"}],
            jwtRules=[
                {
                    "issuer": ISSUER,
                    "audiences": ["books"],
                    "jwksUri": f"{ISSUER}/jwks.json",
                    "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}],
                    "fromParams": ["token"],
                    "fromCookies": ["session"],
                    "outputPayloadToHeader": "x-jwt-payload",
                    "forwardOriginalToken": True,
                    "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}],
                    "timeout": "5s",
                    "spaceDelimitedClaims": ["scope"],
                }
            ],
        )
    ).spec
    assert (spec.selector, spec.target_ref) == (None, None)
    assert spec.target_refs == [PolicyTargetReference(kind="Service", name="books")]
    (jwt,) = spec.jwt_rules or []
    assert (jwt.issuer, jwt.audiences, jwt.jwks_uri, jwt.jwks) == (
        ISSUER,
        ["books"],
        f"{ISSUER}/jwks.json",
        None,
    )
    assert jwt.from_headers == [JWTHeader(name="x-jwt", prefix="Bearer ")]
    assert (jwt.from_params, jwt.from_cookies) == (["token"], ["session"])
    assert (jwt.output_payload_to_header, jwt.forward_original_token) == ("x-jwt-payload", True)
    assert jwt.output_claim_to_headers == [ClaimToHeader(header="x-sub", claim="sub")]
    assert jwt.timeout is not None and jwt.timeout.seconds == 5.0
    assert jwt.space_delimited_claims == ["scope"]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"jwks": JWKS},
        {"jwks": json.dumps(RSA)},  # a single key, as Istio's parser also accepts
        {"jwks": json.dumps({"keys": [{"kty": "oct", "k": "GawgguFyGrWKav7AX4VKUg"}]})},
        {
            "jwks": json.dumps(
                {
                    "keys": [
                        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
                    ]
                }
            )
        },
        {"jwksUri": "http://jwks.example.com:8080/keys"},
        {"jwksUri": "HTTPS://Example.com/.well-known/jwks.json"},
        {"jwksUri": "file:///etc/weir/jwks.json"},  # Weir's extension for the local runtime
        {"timeout": "1ms"},
        {"timeout": "1.5s"},
        {"timeout": "1m30s"},
        {"fromHeaders": [{"name": "Authorization"}]},
        {"outputClaimToHeaders": [{"header": "X-Claim-1", "claim": "nested.claim"}]},
        {"forwardOriginalToken": False},
    ],
)
def test_valid_rules(fields: dict) -> None:
    assert load(rule(**fields))


def test_jwks_uri_alone_is_enough() -> None:
    # Istio's webhook: "issuer or jwksUri must be non-empty"; the issuer is then not checked.
    (jwt,) = load(ra(jwtRules=[{"jwksUri": f"{ISSUER}/jwks.json"}])).spec.jwt_rules or []
    assert jwt.issuer is None


def test_proto_field_name_jwks_uri_is_read_and_written_as_jwks_uri_camel() -> None:
    policy = load(ra(jwtRules=[{"issuer": ISSUER, "jwks_uri": f"{ISSUER}/k"}]))
    assert dump(policy)["spec"]["jwtRules"][0] == {"issuer": ISSUER, "jwksUri": f"{ISSUER}/k"}


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"selector": {"matchLabels": {"app": "gw"}}},
        {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ingress"}},
        {"targetRefs": [{"group": "", "kind": "Service", "name": "a"}, {"kind": "Service", "name": "b"}]},
        {"jwtRules": []},
    ],
)
def test_valid_specs(spec: dict) -> None:
    assert dump(load(ra(**spec)))["spec"] == spec


R = "spec.jwtRules[0]"
RULE_CASES = [
    ({"issuer": None}, f"{R}.issuer", "issuer or jwksUri must be set"),
    ({"issuer": ""}, f"{R}.issuer", "issuer must not be empty"),
    ({"jwks": JWKS, "jwksUri": f"{ISSUER}/k"}, R, "only one of jwks or jwksUri can be set"),
    ({"jwksUri": "ftp://example.com/k"}, f"{R}.jwksUri", "url must have scheme http://, https://"),
    ({"jwksUri": "file://host/keys.json"}, f"{R}.jwksUri", "a file url is file:///absolute/path"),
    ({"jwksUri": "file:keys.json"}, f"{R}.jwksUri", "a file url is file:///absolute/path"),
    ({"jwksUri": "example.com/jwks.json"}, f"{R}.jwksUri", "url must have scheme"),
    ({"jwksUri": "https://"}, f"{R}.jwksUri", "no host"),
    ({"jwksUri": "https://example.com:99999/k"}, f"{R}.jwksUri", "invalid url"),
    ({"jwksUri": "https://[::1/k"}, f"{R}.jwksUri", "invalid url"),
    ({"jwksUri": ""}, f"{R}.jwksUri", "must not be empty"),
    ({"jwksUri": "https://e.com/" + "a" * 2048}, f"{R}.jwksUri", "at most 2048"),
    ({"jwks": "not json"}, f"{R}.jwks", "jwks parse error: not JSON"),
    ({"jwks": "[]"}, f"{R}.jwks", "must be a JSON object"),
    ({"jwks": '{"keys": []}'}, f"{R}.jwks", "'keys' must be a non-empty list"),
    ({"jwks": '{"keys": {}}'}, f"{R}.jwks", "'keys' must be a non-empty list"),
    ({"jwks": json.dumps({"keys": [{**RSA, "e": None}]})}, f"{R}.jwks", "RSA key needs member 'e'"),
    ({"jwks": json.dumps({"keys": [{**RSA, "n": "!!"}]})}, f"{R}.jwks", "RSA key needs member 'n'"),
    ({"jwks": json.dumps({"keys": [{**RSA, "n": "abcde"}]})}, f"{R}.jwks", "RSA key needs member 'n'"),
    ({"jwks": json.dumps({"keys": [{**RSA, "e": 65537}]})}, f"{R}.jwks", "RSA key needs member 'e'"),
    ({"jwks": json.dumps({"keys": [{**EC, "crv": ""}]})}, f"{R}.jwks", "EC key needs member 'crv'"),
    ({"jwks": json.dumps({"keys": [{"kty": "DSA"}]})}, f"{R}.jwks", "unsupported key type"),
    ({"jwks": json.dumps({"keys": [RSA, {"n": "x"}]})}, f"{R}.jwks", "key 1: unsupported key type"),
    ({"audiences": ["a", ""]}, f"{R}.audiences[1]", "must not be empty"),
    ({"fromHeaders": [{"prefix": "Bearer "}]}, f"{R}.fromHeaders[0].name", "required"),
    ({"fromHeaders": [{"name": ""}]}, f"{R}.fromHeaders[0].name", "must not be empty"),
    ({"fromHeaders": [None]}, f"{R}.fromHeaders[0]", "invalid type"),
    ({"fromParams": [""]}, f"{R}.fromParams[0]", "must not be empty"),
    ({"fromCookies": ["c", ""]}, f"{R}.fromCookies[1]", "must not be empty"),
    ({"outputClaimToHeaders": [None]}, f"{R}.outputClaimToHeaders[0]", "invalid type"),
    ({"outputClaimToHeaders": [{"header": "h"}]}, f"{R}.outputClaimToHeaders[0].claim", "required"),
    ({"outputClaimToHeaders": [{"claim": "c"}]}, f"{R}.outputClaimToHeaders[0].header", "required"),
    ({"outputClaimToHeaders": [{"claim": "", "header": "h"}]}, f"{R}.outputClaimToHeaders[0].claim", "empty"),
    (
        {"outputClaimToHeaders": [{"claim": "c", "header": ""}]},
        f"{R}.outputClaimToHeaders[0].header",
        "empty",
    ),
    (
        {"outputClaimToHeaders": [{"claim": "c", "header": ":authority"}]},
        f"{R}.outputClaimToHeaders[0].header",
        "invalid header name",
    ),
    (
        {"outputClaimToHeaders": [{"claim": "c", "header": "x_sub"}]},
        f"{R}.outputClaimToHeaders[0].header",
        "invalid header name",
    ),
    ({"timeout": "apple"}, f"{R}.timeout", "must be a valid duration greater than 1ms"),
    ({"timeout": 5}, f"{R}.timeout", "must be a valid duration greater than 1ms"),
    ({"timeout": "0s"}, f"{R}.timeout", "must be a valid duration greater than 1ms"),
    ({"timeout": "500us"}, f"{R}.timeout", "must be a valid duration greater than 1ms"),
    ({"timeout": "-1s"}, f"{R}.timeout", "must be a valid duration greater than 1ms"),
    ({"timeout": "1.0005s"}, f"{R}.timeout", "only durations to ms precision"),
    ({"spaceDelimitedClaims": [""]}, f"{R}.spaceDelimitedClaims[0]", "must not be empty"),
    ({"spaceDelimitedClaims": [f"c{i}" for i in range(65)]}, f"{R}.spaceDelimitedClaims", "at most 64"),
    ({"forwardOriginalToken": "maybe"}, f"{R}.forwardOriginalToken", "invalid type"),
    ({"jwksURI": "https://e.com/k"}, f"{R}.jwksURI", "unknown field"),
]

SPEC_CASES = [
    ({"jwtRules": [None]}, "spec.jwtRules[0]", "invalid type"),
    ({"jwtRules": [{"issuer": ISSUER}] * 4097}, "spec.jwtRules", "at most 4096"),
    (
        {"selector": {"matchLabels": {"a": "b"}}, "targetRef": {"kind": "Service", "name": "foo"}},
        "spec",
        "only one of targetRefs or selector can be set",
    ),
    (
        {"targetRef": {"kind": "Service", "name": "a"}, "targetRefs": [{"kind": "Service", "name": "b"}]},
        "spec",
        "found targetRef and targetRefs",
    ),
    ({"targetRef": {"kind": "Service"}}, "spec.targetRef.name", "required"),
    (
        {"targetRef": {"kind": "Service", "name": "a", "namespace": "b"}},
        "spec.targetRef.namespace",
        "cross namespace",
    ),
    ({"targetRef": {"group": "__", "kind": "Service", "name": "a"}}, "spec.targetRef.group", "invalid group"),
    ({"targetRef": {"kind": "Serv_ice", "name": "a"}}, "spec.targetRef.kind", "invalid kind"),
    (
        {"targetRef": {"group": "apps", "kind": "Deployment", "name": "a"}},
        "spec.targetRef",
        "must be to one of",
    ),
    ({"targetRefs": [{"kind": "Gateway", "name": "a"}]}, "spec.targetRefs[0]", "but was core/Gateway"),
    ({"selector": {"matchLabels": {"app": "a*"}}}, "spec.selector.matchLabels.app", "wildcard"),
    ({"jwt_rule": []}, "spec.jwt_rule", "unknown field"),
]


@pytest.mark.parametrize(("fields", "path", "fragment"), RULE_CASES)
def test_refused_rule(fields: dict, path: str, fragment: str) -> None:
    body = rule(**fields)
    body["spec"]["jwtRules"][0] = {k: v for k, v in body["spec"]["jwtRules"][0].items() if v is not None}
    err = refused(body)
    assert err.path == path, str(err)
    assert fragment in err.message, str(err)


@pytest.mark.parametrize(("spec", "path", "fragment"), SPEC_CASES)
def test_refused_spec(spec: dict, path: str, fragment: str) -> None:
    err = refused(ra(**spec))
    assert err.path == path, str(err)
    assert fragment in err.message, str(err)


def test_dry_run_annotation_is_refused() -> None:
    err = refused(security("RequestAuthentication", annotations={"istio.io/dry-run": "true"}))
    assert err.path == "metadata.annotations.istio.io/dry-run"
