"""RequestAuthentication decisions: JWTs signed in the test with RSA and EC keys, checked against a fake
wall clock (no sleeps); token locations, Envoy's refusal reasons, output headers and the verified-token cache."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mesh.proxy import authz, jwks, jwt_authn
from mesh.proxy.matching import RequestHead
from mesh.view import model, security

ISSUER = "https://issuer.example"
NOW = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def keys():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    intruder = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    key_set = json.dumps({"keys": [{**rsa_jwk, "kid": "rsa-1", "use": "sig"}, {**ec_jwk, "kid": "ec-1"}]})
    return {"rsa": rsa_key, "ec": ec_key, "intruder": intruder, "jwks": key_set}


def token(keys, claims: dict | None = None, key: str = "rsa", alg: str = "RS256", kid: str | None = "rsa-1",
          **extra) -> str:
    payload = {"iss": ISSUER, "sub": "alice", "aud": "books", "exp": NOW + 3600, **(claims or {}), **extra}
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, keys[key], algorithm=alg, headers=headers)


def rule(keys, **fields) -> model.JwtRule:
    return model.JwtRule(ISSUER, keys["jwks"], "bookinfo/jwt", **fields)


def authenticator(keys, *rules: model.JwtRule, clock: Clock | None = None) -> jwt_authn.JwtAuthenticator:
    return jwt_authn.JwtAuthenticator(rules or (rule(keys),), clock or Clock())


def head(path: str = "/books", **headers: str) -> RequestHead:
    pairs = [(name.replace("_", "-").lower().encode(), value.encode()) for name, value in headers.items()]
    return RequestHead("GET", path, "books", 9080, pairs)


def bearer(value: str) -> RequestHead:
    return head(authorization=f"Bearer {value}")


def test_a_valid_rsa_token_gives_principal_audiences_presenter_and_claims(keys):
    auth, failure = authenticator(keys).authenticate(bearer(token(keys, azp="ui", groups=["dev"])))
    assert failure is None
    assert (auth.principal, auth.audiences, auth.presenter) == (f"{ISSUER}/alice", ("books",), "ui")
    assert auth.claims["groups"] == ["dev"]


def test_a_valid_ec_token(keys):
    auth, failure = authenticator(keys).authenticate(bearer(token(keys, key="ec", alg="ES256", kid="ec-1")))
    assert (failure, auth.principal) == (None, f"{ISSUER}/alice")


def test_a_token_without_kid_is_tried_against_every_key(keys):
    auth, failure = authenticator(keys).authenticate(bearer(token(keys, key="ec", alg="ES256", kid=None)))
    assert failure is None and auth is not None


@pytest.mark.parametrize(("claims", "reason"), [
    ({"exp": NOW - jwt_authn.CLOCK_SKEW_S - 1}, jwt_authn.EXPIRED),
    ({"exp": NOW - 30}, None),  # within the clock skew
    ({"nbf": NOW + jwt_authn.CLOCK_SKEW_S + 60}, jwt_authn.NOT_YET_VALID),
    ({"nbf": NOW + 30}, None),
    ({"exp": None}, None),  # exp is optional, as in Envoy without require_expiration
    ({"iss": "https://other.example"}, jwt_authn.UNKNOWN_ISSUER),
    ({"aud": "ratings"}, jwt_authn.AUDIENCE_NOT_ALLOWED),
    ({"aud": ["ratings", "books"]}, None),
    ({"exp": "tomorrow"}, jwt_authn.VERIFICATION_FAILS),
])
def test_time_issuer_and_audience_checks(keys, claims, reason):
    auth, failure = authenticator(keys, rule(keys, audiences=("books",))).authenticate(bearer(token(keys, claims)))
    assert failure == reason
    assert (auth is None) == (reason is not None)


def test_a_rule_without_issuer_checks_no_iss(keys):
    """A RequestAuthentication rule with only `jwksUri` (Istio allows it): Envoy's provider has no issuer,
    and a token's `iss`, whatever it is or without one, is not compared."""
    no_issuer = model.JwtRule("", keys["jwks"], "bookinfo/jwks-only")
    for claims in ({"iss": "https://anyone.example"}, {"iss": None}):
        auth, failure = authenticator(keys, no_issuer).authenticate(bearer(token(keys, claims)))
        assert failure is None and auth is not None
    forged = token(keys, {"iss": "https://anyone.example"}, key="intruder")
    assert authenticator(keys, no_issuer).authenticate(bearer(forged)) == (None, jwt_authn.VERIFICATION_FAILS)


def test_without_configured_audiences_any_audience_is_accepted(keys):
    auth, failure = authenticator(keys).authenticate(bearer(token(keys, aud="anything")))
    assert failure is None and auth.audiences == ("anything",)


def test_a_token_signed_by_another_key_fails_verification(keys):
    forged = token(keys, key="intruder")
    assert authenticator(keys).authenticate(bearer(forged)) == (None, jwt_authn.VERIFICATION_FAILS)


def test_a_tampered_payload_fails_verification(keys):
    header, _, signature = token(keys).split(".")
    payload = base64.urlsafe_b64encode(json.dumps({"iss": ISSUER, "sub": "root"}).encode()).rstrip(b"=").decode()
    assert authenticator(keys).authenticate(bearer(f"{header}.{payload}.{signature}"))[1] == (
        jwt_authn.VERIFICATION_FAILS)


def test_alg_none_is_refused(keys):
    unsigned = jwt.encode({"iss": ISSUER, "sub": "alice"}, None, algorithm="none")
    assert authenticator(keys).authenticate(bearer(unsigned)) == (None, jwt_authn.UNSUPPORTED_ALG)


def test_hmac_signed_with_the_public_rsa_key_is_refused(keys):
    """The algorithm-confusion attack: HS256 keyed with the (public) RSA key's PEM."""
    public_pem = keys["rsa"].public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()) + "." + b64(
        json.dumps({"iss": ISSUER, "sub": "alice"}).encode())
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64(signature)}"
    assert authenticator(keys).authenticate(bearer(forged)) == (None, jwt_authn.NO_KEY)


def test_a_kid_the_jwks_does_not_have(keys):
    assert authenticator(keys).authenticate(bearer(token(keys, kid="rotated")))[1] == jwt_authn.NO_KEY


@pytest.mark.parametrize(("value", "reason"), [
    ("abc", jwt_authn.BAD_FORMAT),
    ("a.b.c", jwt_authn.BAD_HEADER),
])
def test_malformed_tokens(keys, value, reason):
    assert authenticator(keys).authenticate(bearer(value)) == (None, reason)


def test_an_unusable_jwks_fails_every_token(keys):
    broken = model.JwtRule(ISSUER, "{not json")
    assert jwt_authn.JwtAuthenticator((broken,), Clock()).authenticate(bearer(token(keys)))[1] == jwt_authn.NO_KEY


def test_no_token_passes_unauthenticated(keys):
    assert authenticator(keys).authenticate(head()) == (None, None)
    assert authenticator(keys).authenticate(head(authorization="Basic dXNlcjpwYXNz")) == (None, None)


def test_default_locations_include_the_access_token_parameter(keys):
    auth, failure = authenticator(keys).authenticate(head(f"/books?access_token={token(keys)}"))
    assert failure is None and auth.subject == "alice"


def test_a_custom_header_with_prefix_replaces_the_defaults(keys):
    custom = rule(keys, from_headers=(("x-jwt-assertion", "Token "),))
    verifier = authenticator(keys, custom)
    auth, failure = verifier.authenticate(head(x_jwt_assertion=f"Token {token(keys)}"))
    assert failure is None and auth is not None
    assert verifier.authenticate(bearer(token(keys))) == (None, None), "Authorization is no longer read"
    assert verifier.authenticate(head(x_jwt_assertion=token(keys))) == (None, None), "the prefix is required"


def test_a_custom_query_parameter(keys):
    verifier = authenticator(keys, rule(keys, from_params=("token",)))
    auth, failure = verifier.authenticate(head(f"/books?x=1&token={token(keys)}"))
    assert failure is None and auth is not None
    assert verifier.authenticate(head(f"/books?access_token={token(keys)}")) == (None, None)


def test_a_cookie(keys):
    verifier = authenticator(keys, rule(keys, from_cookies=("session",)))
    auth, failure = verifier.authenticate(head(cookie=f"theme=dark; session={token(keys)}"))
    assert failure is None and auth is not None


def test_one_verified_token_among_rules_is_enough(keys):
    other = model.JwtRule("https://other.example", keys["jwks"])
    verifier = authenticator(keys, other, rule(keys))
    auth, failure = verifier.authenticate(bearer(token(keys)))
    assert failure is None and auth.rule.spec.issuer == ISSUER


def test_the_token_header_is_removed_after_verification(keys):
    request = head(authorization=f"Bearer {token(keys)}", x_app="1")
    verifier = authenticator(keys)
    auth, _ = verifier.authenticate(request)
    verifier.rewrite(request, auth)
    assert request.header(b"authorization") is None and request.header(b"x-app") == "1"


def test_forward_original_token_keeps_it(keys):
    request = bearer(token(keys))
    verifier = authenticator(keys, rule(keys, forward_original_token=True))
    auth, _ = verifier.authenticate(request)
    verifier.rewrite(request, auth)
    assert request.header(b"authorization") == f"Bearer {token(keys)}"


def test_output_claims_and_payload_headers(keys):
    raw = token(keys, {"groups": ["dev"], "admin": True, "org": {"id": 7}})
    request = head(authorization=f"Bearer {raw}", x_sub="spoofed")
    verifier = authenticator(keys, rule(keys, output_payload_to_header="x-jwt-payload",
                                        output_claim_to_headers=(("x-sub", "sub"), ("x-admin", "admin"),
                                                                 ("x-org", "org.id"), ("x-groups", "groups"))))
    auth, _ = verifier.authenticate(request)
    verifier.rewrite(request, auth)
    assert request.header(b"x-sub") == "alice"
    assert [v for k, v in request.headers if k == b"x-sub"] == [b"alice"], "the client's value is replaced"
    assert (request.header(b"x-admin"), request.header(b"x-org")) == ("true", "7")
    assert request.header(b"x-groups") is None, "lists are not copied to headers"
    payload = request.header(b"x-jwt-payload")
    assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"] == "alice"


def test_verified_tokens_are_cached_until_they_expire(keys, monkeypatch):
    clock = Clock()
    verifier = authenticator(keys, clock=clock)
    raw = token(keys, exp=NOW + 10)
    calls = []
    original = jwt_authn.JwtAuthenticator._verify
    monkeypatch.setattr(jwt_authn.JwtAuthenticator, "_verify", lambda *args: calls.append(1) or original(*args))
    first, _ = verifier.authenticate(bearer(raw))
    second, _ = verifier.authenticate(bearer(raw))
    assert first is second and len(calls) == 1
    clock.now = NOW + 10 + jwt_authn.CLOCK_SKEW_S + 1
    assert verifier.authenticate(bearer(raw)) == (None, jwt_authn.EXPIRED)
    assert repr(verifier) == "<JwtAuthenticator rules=1 cached=0>"


def test_the_cache_is_bounded(keys, monkeypatch):
    monkeypatch.setattr(jwt_authn, "MAX_CACHED_TOKENS", 2)
    verifier = authenticator(keys)
    for subject in ("a", "b", "c"):
        verifier.authenticate(bearer(token(keys, sub=subject)))
    assert [auth.subject for auth in verifier.cache.values()] == ["b", "c"]


def test_claims_reach_authorization(keys):
    auth, _ = authenticator(keys).authenticate(bearer(token(keys, groups=["dev", "admin"])))
    admins = model.AuthzPolicy("bookinfo/admins", security.ALLOW, (model.AuthzRule(
        sources=(model.AuthzSource(request_principals=(f"{ISSUER}/*",)),),
        conditions=(model.AuthzCondition("request.auth.claims[groups]", ("admin",)),)),))
    policies = authz.compile_policies((admins,))
    assert authz.decide(policies, authz.Request("GET", "/", "books", 9080, auth=auth)).allowed
    assert not authz.decide(policies, authz.Request("GET", "/", "books", 9080)).allowed


def test_a_good_token_next_to_a_bad_one_for_the_same_rule_is_refused(keys):
    verifier = authenticator(keys, rule(keys, from_headers=(("x-a", ""), ("x-b", ""))))
    request = head(x_a=token(keys), x_b=token(keys, key="intruder"))
    assert verifier.authenticate(request) == (None, jwt_authn.VERIFICATION_FAILS)


def test_a_rule_that_passes_wins_over_one_that_fails(keys):
    strict = model.JwtRule("https://other.example", keys["jwks"], from_headers=(("x-other", ""),))
    verifier = authenticator(keys, strict, rule(keys))
    request = head(x_other=token(keys), authorization=f"Bearer {token(keys)}")
    auth, failure = verifier.authenticate(request)
    assert failure is None and auth.rule.spec.issuer == ISSUER


def test_a_proxy_without_request_authentication_never_loads_pyjwt():
    """PyJWT (and the cryptography backends it pulls in) is imported on the first JWKS parsed: a sidecar
    whose view has no JwtRule keeps that memory."""
    import subprocess
    import sys

    code = ("import sys, mesh.proxy.__main__, mesh.proxy.access; assert 'jwt' not in sys.modules, 'jwt imported';"
            "from mesh.proxy import jwks; jwks.parse_jwks('{\"keys\": []}'); assert 'jwt' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(("segment", "decoded"), [("", b""), ("YQ", b"a"), ("YWI", b"ab"), ("YWJj", b"abc"),
                                                   ("-_8", b"\xfb\xff")])
def test_segments_decode_as_unpadded_base64url(segment, decoded):
    assert jwks.base64url_decode(segment) == decoded


@pytest.mark.parametrize("segment", ["a", "é", "Y*Q"])
def test_a_segment_that_is_not_base64url_is_a_value_error(segment):
    with pytest.raises(ValueError):  # noqa: PT011 - binascii.Error and UnicodeEncodeError are both ValueErrors
        jwks.base64url_decode(segment)
