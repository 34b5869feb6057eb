"""Simulation tests for `corsPolicy`: YAML in, the compiled `model.Cors` of the route a call hits out
(Istio's TranslateCORSPolicy), and through the wire as a proxy receives it."""

from __future__ import annotations

from mesh.view import model, wire
from tests.mesh.control import simulate as sim
from tests.mesh.control.conftest import view
from tests.mesh.control.test_resilience import books_route, vs


def cors_of(rule: str) -> model.Cors | None:
    """The policy compiled for books' route, `rule` being lines under `- route: [{destination: books}]`."""
    return books_route(rule).cors


def test_istio_testdata_policy_compiles_to_envoys_fields():
    got = cors_of("""    corsPolicy:
      allowOrigins: [{exact: "http://foo.example"}, {prefix: "https://"}, {regex: ".*\\\\.example"}]
      allowMethods: [POST, GET, OPTIONS]
      allowHeaders: [content-type, x-a]
      exposeHeaders: [x-custom-header]
      maxAge: 5m
      allowCredentials: true""")
    assert got == model.Cors(
        origins=(model.StringMatch("exact", "http://foo.example"), model.StringMatch("prefix", "https://"),
                 model.StringMatch("regex", ".*\\.example")),
        allow_methods="POST,GET,OPTIONS", allow_headers="content-type,x-a", expose_headers="x-custom-header",
        max_age="300", credentials=True, forward_unmatched=True)


def test_deprecated_allow_origin_is_exact_and_ignore_answers_unmatched_preflights():
    got = cors_of("""    corsPolicy: {allowOrigin: ["*", "http://a"], allowCredentials: false, unmatchedPreflights: IGNORE}""")
    assert got == model.Cors(origins=(model.StringMatch("exact", "*"), model.StringMatch("exact", "http://a")),
                             credentials=False, forward_unmatched=False)


def test_a_wildcard_allow_headers_is_sent_as_star_for_the_proxy_to_echo():
    assert cors_of("    corsPolicy: {allowOrigins: [{exact: '*'}], allowHeaders: ['*']}").allow_headers == "*"


def test_allow_origins_win_over_the_deprecated_list():
    got = cors_of("""    corsPolicy: {allowOrigin: ["http://old"], allowOrigins: [{exact: "http://new"}]}""")
    assert got.origins == (model.StringMatch("exact", "http://new"),)


def test_no_policy_and_redirects_carry_none():
    assert cors_of("") is None
    # Envoy's filter is bypassed on a redirect or a direct response: nothing is sent for them.
    redirect = vs("").replace("- route: [{destination: {host: books}}]",
                              '- redirect: {uri: /elsewhere}\n    corsPolicy: {allowOrigins: [{exact: "http://a"}]}')
    assert sim.route(view(redirect), 9080, "books").cors is None


def test_the_policy_survives_the_wire():
    v = view(vs("""    corsPolicy: {allowOrigins: [{exact: "http://a"}], maxAge: 10s}"""))
    again = wire.from_dict(wire.to_dict(v))
    assert again == v and sim.route(again, 9080, "books").cors.max_age == "10"
