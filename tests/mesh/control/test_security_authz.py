"""AuthorizationPolicy and RequestAuthentication → Security.policies / jwt_rules (YAML → view), and the
determinism of the security part of a view."""

from __future__ import annotations

import json

import pytest

from mesh.control import builder, security, snapshot
from mesh.view import model, wire
from tests.mesh.control.conftest import INGRESS, NS, sidecar, snap, view

ROOT = snapshot.ROOT_NAMESPACE


def ap(name: str, ns: str = NS, body: str = "", app: str | None = None, extra: str = "") -> str:
    """An AuthorizationPolicy; `body` is indented spec lines (none and no `app`: `spec: {}`)."""
    selector = f"  selector: {{matchLabels: {{app: {app}}}}}\n" if app else ""
    spec = f"spec:\n{selector}{body}".rstrip() if (selector or body) else "spec: {}"
    return f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {ns}{extra}}}
{spec}
---
"""


def names(yaml_text: str, proxy=None) -> list[str]:
    return [p.name for p in view(yaml_text, proxy or sidecar("books-v1")).security.policies]


SELECTION = (
    ap("z-mesh", ROOT)
    + ap("mesh-books", ROOT, app="books")
    + ap("mesh-gateway", ROOT, body="  action: DENY\n  rules: [{}]", app="istio-ingressgateway")
    + ap("ns-all", NS)
    + ap("ns-books", NS, app="books")
    + ap("ns-ratings", NS, app="ratings")
    + ap("other-ns", "default")
)


def test_authorization_policy_selection_for_a_sidecar():
    assert names(SELECTION) == [f"{NS}/ns-all", f"{NS}/ns-books", f"{ROOT}/mesh-books", f"{ROOT}/z-mesh"]
    assert names(SELECTION, sidecar("ratings-v2")) == [f"{NS}/ns-all", f"{NS}/ns-ratings", f"{ROOT}/z-mesh"]


def test_gateways_are_selected_by_their_labels_in_the_root_namespace():
    gateway_selected = SELECTION + ap("gw-ingress", ROOT, "  selector: {matchLabels: {istio: ingressgateway}}")
    assert names(gateway_selected, INGRESS) == [f"{ROOT}/gw-ingress", f"{ROOT}/z-mesh"]


def test_target_ref_policies_apply_to_no_sidecar():
    config = ap("waypoint", NS, body="  targetRefs: [{kind: Service, group: '', name: books}]")
    assert names(config) == []


RULES = """  action: DENY
  rules:
  - from:
    - source: {principals: [cluster.local/ns/bookinfo/sa/gw], notNamespaces: [default]}
    - source: {serviceAccounts: [ui, other/robot], remoteIpBlocks: [10.0.0.0/8]}
    to:
    - operation: {methods: [GET, HEAD], paths: [/books*], ports: ["9080"], notHosts: [evil.example.com]}
    when:
    - {key: "request.headers[x-token]", values: [secret], notValues: [guest]}
    - {key: source.serviceAccount, values: [gw, bookinfo/ui]}
  - {}
"""


def test_policy_conversion():
    (policy,) = view(ap("deny", NS, RULES), sidecar("books-v1")).security.policies
    assert policy == model.AuthzPolicy(
        name="bookinfo/deny",
        action="DENY",
        rules=(
            model.AuthzRule(
                sources=(
                    model.AuthzSource(principals=("cluster.local/ns/bookinfo/sa/gw",), not_namespaces=("default",)),
                    model.AuthzSource(principals=("*/ns/bookinfo/sa/ui", "*/ns/other/sa/robot"),
                                      remote_ip_blocks=("10.0.0.0/8",)),
                ),
                operations=(model.AuthzOperation(methods=("GET", "HEAD"), paths=("/books*",), ports=("9080",),
                                                 not_hosts=("evil.example.com",)),),
                conditions=(
                    model.AuthzCondition("request.headers[x-token]", ("secret",), ("guest",)),
                    model.AuthzCondition("source.serviceAccount", ("bookinfo/gw", "bookinfo/ui")),
                ),
            ),
            model.AuthzRule(),
        ),
    )


def test_empty_spec_is_an_allow_without_rules_and_dry_run_is_carried():
    dry = ap("shadow", NS, "  action: DENY\n  rules: [{}]", extra=", annotations: {istio.io/dry-run: 'true'}")
    policies = view(ap("deny-all", NS) + dry, sidecar("books-v1")).security.policies
    assert policies == (
        model.AuthzPolicy("bookinfo/deny-all", "ALLOW", ()),
        model.AuthzPolicy("bookinfo/shadow", "DENY", (model.AuthzRule(),), dry_run=True),
    )


def test_audit_is_carried_and_custom_is_skipped():
    from mesh.control import authorization

    audit = snap(ap("audit", NS, "  action: AUDIT\n  rules: [{}]")).authorization_policies[NS][0]
    assert authorization.compile_policy(audit).action == "AUDIT"
    custom = audit.model_copy(update={"spec": audit.spec.model_copy(update={"action": "CUSTOM"})})
    assert authorization.compile_policy(custom) is None


JWKS = {"keys": [{"kty": "RSA", "kid": "k1", "e": "AQAB", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"}]}  # noqa: E501
JWKS_TEXT = json.dumps(JWKS)


def ra(name: str, ns: str = NS, rules: str = "", app: str | None = None) -> str:
    selector = f"\n  selector: {{matchLabels: {{app: {app}}}}}" if app else ""
    return f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: {name}, namespace: {ns}}}
spec:{selector}
  jwtRules:
{rules}
---
"""


def test_jwt_rules_inline_and_selection():
    inline = f"""  - issuer: https://issuer.example.com
    audiences: [books]
    jwks: '{JWKS_TEXT}'
    fromHeaders: [{{name: X-Jwt, prefix: "Bearer "}}]
    fromParams: [token]
    fromCookies: [session]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{{header: x-sub, claim: sub}}]
"""
    config = ra("books", NS, inline, app="books") + ra("ratings", NS, inline, app="ratings")
    (rule,) = view(config, sidecar("books-v1")).security.jwt_rules
    assert rule == model.JwtRule(
        issuer="https://issuer.example.com", jwks=JWKS_TEXT, policy="bookinfo/books", audiences=("books",),
        from_headers=(("x-jwt", "Bearer "),), from_params=("token",), from_cookies=("session",),
        forward_original_token=True, output_payload_to_header="x-jwt-payload",
        output_claim_to_headers=(("x-sub", "sub"),),
    )
    mesh_wide = ra("mesh", ROOT, "  - {issuer: https://mesh.example.com, jwks: '" + JWKS_TEXT + "'}")
    assert [r.policy for r in view(mesh_wide, INGRESS).security.jwt_rules] == [f"{ROOT}/mesh"]


def test_jwks_from_a_file_uri_is_read_before_the_snapshot(tmp_path):
    from mesh.control import jwks

    path = tmp_path / "jwks.json"
    path.write_text(JWKS_TEXT)
    config = ra("file", NS, f"  - {{issuer: file-issuer, jwksUri: 'file://{path}'}}")
    resources = snap(config).resources
    resolver = jwks.JwksResolver()
    s = snapshot.build_snapshot(resources, snap().registry, jwks=resolver.resolve(resources))
    (rule,) = builder.build_proxy_view(s, sidecar("books-v1")).security.jwt_rules
    assert rule.jwks == JWKS_TEXT and rule.issuer == "file-issuer"
    # without a resolved key set (missing file, failed fetch), the rule rejects every token of its issuer
    path.unlink()
    missing = jwks.JwksResolver().resolve(resources)
    assert missing == {}
    s = snapshot.build_snapshot(resources, snap().registry, jwks=missing)
    (rule,) = builder.build_proxy_view(s, sidecar("books-v1")).security.jwt_rules
    assert rule.jwks == security.FAKE_JWKS


def test_fake_jwks_is_a_usable_key_set_that_verifies_nothing():
    import jwt

    keys = jwt.PyJWKSet.from_json(security.FAKE_JWKS)
    assert len(keys.keys) == 1 and keys.keys[0].key_id == "weir-unresolved-jwks"


def test_jwks_sources():
    config = (
        ra("a", NS, "  - {issuer: https://issuer.example.com/}\n"
                    "  - {issuer: x, jwksUri: 'https://keys.example.com/jwks', timeout: 2s}\n"
                    f"  - {{issuer: y, jwks: '{JWKS_TEXT}'}}\n"
                    "  - {issuer: not-a-url}")
        + ra("b", "default", "  - {issuer: z, jwksUri: 'https://keys.example.com/jwks', timeout: 7s}")
    )
    assert security.jwks_sources(snap(config).resources) == {
        "https://issuer.example.com/.well-known/openid-configuration": None,
        "https://keys.example.com/jwks": 7.0,
    }


FULL = (
    SELECTION
    + ap("deny", NS, RULES)
    + ra("books", NS, f"  - {{issuer: https://issuer.example.com, jwks: '{JWKS_TEXT}'}}")
    + """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: books, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: books}}
  mtls: {mode: STRICT}
  portLevelMtls: {9090: {mode: DISABLE}, 8080: {mode: PERMISSIVE}}
---
"""
)


@pytest.mark.parametrize("proxy", [sidecar("books-v1"), sidecar("gw-v1"), INGRESS], ids=lambda n: n.id)
def test_same_config_gives_the_same_version(proxy):
    resources = snap(FULL).resources
    first = builder.build_proxy_view(snapshot.build_snapshot(resources, snap().registry), proxy)
    shuffled = builder.build_proxy_view(snapshot.build_snapshot(tuple(reversed(resources)), snap().registry), proxy)
    assert first == shuffled and wire.version_of(first) == wire.version_of(shuffled)
    assert wire.from_dict(json.loads(wire.to_json(first))) == first  # the security part survives the wire
