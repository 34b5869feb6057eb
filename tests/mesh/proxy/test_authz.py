"""AuthorizationPolicy evaluation as pure decisions: each match kind under each action, Istio's order
(AUDIT, DENY, ALLOW), empty policies and rules, dry-run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mesh.proxy import authz
from mesh.view import model, security

GW = "cluster.local/ns/bookinfo/sa/gw"
BOOKS = "cluster.local/ns/bookinfo/sa/books"
OTHER_NS = "cluster.local/ns/other/sa/gw"
ISTIO_SNI = "outbound_.9080_._.books.bookinfo.svc.cluster.local"  # what a sidecar sends another (origination)
Source = model.AuthzSource
Operation = model.AuthzOperation
When = model.AuthzCondition


def request(method: str = "GET", path: str = "/books", host: str = "books", port: int | None = 9080,
            headers: dict[str, str] | None = None, principal: str | None = GW, peer_ip: str = "10.0.0.5",
            auth=None, authority: str | None = None, local_ip: str = "10.0.0.9", sni: str = "",
            gateway: bool = False, trusted_hops: int = 0) -> authz.Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return authz.Request(method, path, host, port, raw, principal, peer_ip, auth, authority=authority,
                         local_ip=local_ip, sni=sni, use_remote_address=gateway, trusted_hops=trusted_hops)


def jwt(principal: str = "https://issuer.example/alice", claims: dict | None = None, audiences=("books",),
        presenter: str | None = "ui"):
    return SimpleNamespace(principal=principal, claims=claims or {}, audiences=audiences, presenter=presenter)


def rule(source: Source | None = None, operation: Operation | None = None, *when: When) -> model.AuthzRule:
    return model.AuthzRule((source,) if source else (), (operation,) if operation else (), when)


def policy(action: str, *rules: model.AuthzRule, name: str = "bookinfo/p", dry_run: bool = False):
    return model.AuthzPolicy(name, action, rules, dry_run)


def decide(*policies: model.AuthzPolicy, req: authz.Request | None = None) -> authz.Decision:
    return authz.decide(authz.compile_policies(policies), req or request())


# (case id, rule, a request it matches, a request it does not match)
CASES = [
    ("principals", rule(Source(principals=(GW,))), request(), request(principal=BOOKS)),
    ("principals-plaintext", rule(Source(principals=("*",))), request(), request(principal=None)),
    ("principals-prefix", rule(Source(principals=("cluster.local/ns/bookinfo/*",))), request(),
     request(principal=OTHER_NS)),
    ("notPrincipals", rule(Source(not_principals=(BOOKS,))), request(), request(principal=BOOKS)),
    ("notPrincipals-star-plaintext", rule(Source(not_principals=("*",))), request(principal=None), request()),
    ("namespaces", rule(Source(namespaces=("bookinfo",))), request(), request(principal=OTHER_NS)),
    ("namespaces-plaintext", rule(Source(namespaces=("bookinfo",))), request(), request(principal=None)),
    ("notNamespaces", rule(Source(not_namespaces=("other",))), request(principal=None),
     request(principal=OTHER_NS)),
    ("requestPrincipals", rule(Source(request_principals=("https://issuer.example/alice",))),
     request(auth=jwt()), request(auth=jwt("https://issuer.example/bob"))),
    ("requestPrincipals-star", rule(Source(request_principals=("*",))), request(auth=jwt()), request()),
    ("notRequestPrincipals-star", rule(Source(not_request_principals=("*",))), request(), request(auth=jwt())),
    ("ipBlocks-cidr", rule(Source(ip_blocks=("10.0.0.0/24",))), request(), request(peer_ip="10.0.1.5")),
    ("ipBlocks-address", rule(Source(ip_blocks=("10.0.0.5",))), request(), request(peer_ip="10.0.0.6")),
    ("ipBlocks-v6", rule(Source(ip_blocks=("fd00::/8",))), request(peer_ip="fd00::1"), request(peer_ip="::1")),
    ("notIpBlocks", rule(Source(not_ip_blocks=("10.0.1.0/24",))), request(), request(peer_ip="10.0.1.5")),
    # A sidecar believes the rightmost X-Forwarded-For entry (its gateway appended the client there); a
    # gateway believes only the connection's peer, or with trusted hops the entry that many from the right.
    ("remoteIpBlocks-xff", rule(Source(remote_ip_blocks=("203.0.113.0/24",))),
     request(headers={"x-forwarded-for": "10.9.9.9, 203.0.113.7"}),
     request(headers={"x-forwarded-for": "203.0.113.7, 10.0.0.1"})),
    ("remoteIpBlocks-gateway-ignores-xff", rule(Source(remote_ip_blocks=("203.0.113.0/24",))),
     request(peer_ip="203.0.113.8", gateway=True),
     request(headers={"x-forwarded-for": "203.0.113.7"}, gateway=True)),
    ("remoteIpBlocks-gateway-trusted-hop", rule(Source(remote_ip_blocks=("203.0.113.0/24",))),
     request(headers={"x-forwarded-for": "10.9.9.9, 203.0.113.7"}, gateway=True, trusted_hops=1),
     request(headers={"x-forwarded-for": "203.0.113.7, 10.9.9.9"}, gateway=True, trusted_hops=1)),
    ("remoteIpBlocks-gateway-too-few-hops", rule(Source(remote_ip_blocks=("10.0.0.5/32",))),
     request(gateway=True, trusted_hops=2), request(peer_ip="10.0.0.6", gateway=True, trusted_hops=2)),
    ("remoteIpBlocks-peer", rule(Source(remote_ip_blocks=("10.0.0.0/24",))), request(),
     request(headers={"x-forwarded-for": "203.0.113.7"})),
    ("notRemoteIpBlocks", rule(Source(not_remote_ip_blocks=("203.0.113.0/24",))), request(),
     request(headers={"x-forwarded-for": "203.0.113.7"})),
    ("methods", rule(operation=Operation(methods=("GET", "HEAD"))), request(), request("POST")),
    ("notMethods", rule(operation=Operation(not_methods=("DELETE",))), request(), request("DELETE")),
    ("paths-exact", rule(operation=Operation(paths=("/books",))), request(), request(path="/books/1")),
    ("paths-prefix", rule(operation=Operation(paths=("/books/*",))), request(path="/books/1"), request()),
    ("paths-suffix", rule(operation=Operation(paths=("*.json",))), request(path="/a/b.json"),
     request(path="/a/b.xml")),
    ("paths-star", rule(operation=Operation(paths=("*",))), request(path="/anything"), None),
    ("paths-case", rule(operation=Operation(paths=("/books",))), request(), request(path="/Books")),
    ("notPaths", rule(operation=Operation(not_paths=("/admin*",))), request(), request(path="/admin/users")),
    # Envoy URI templates: `{*}` one non-empty segment, `{**}` the rest ('/' included), literals as written.
    ("paths-template-segment", rule(operation=Operation(paths=("/books/{*}/reviews",))),
     request(path="/books/7/reviews"), request(path="/books/7/8/reviews")),
    ("paths-template-segment-not-empty", rule(operation=Operation(paths=("/books/{*}/reviews",))),
     request(path="/books/7/reviews"), request(path="/books//reviews")),
    ("paths-template-literal", rule(operation=Operation(paths=("/books/{*}/reviews",))),
     request(path="/books/7/reviews"), request(path="/books/{*}/reviews2")),
    ("paths-template-rest", rule(operation=Operation(paths=("/admin/{**}",))), request(path="/admin/a/b"),
     request(path="/admin")),
    ("paths-template-rest-then-literal", rule(operation=Operation(paths=("/{**}/edit",))),
     request(path="/a/b/edit"), request(path="/a/b/edit/x")),
    ("notPaths-template", rule(operation=Operation(not_paths=("/admin/{**}",))), request(),
     request(path="/admin/users/1")),
    ("hosts-case-and-port", rule(operation=Operation(hosts=("Books.Example.COM",))),
     request(host="books.example.com", authority="books.example.com:8080"), request(host="ratings.example.com")),
    ("hosts-suffix", rule(operation=Operation(hosts=("*.example.com",))), request(host="books.example.com"),
     request(host="books.example.org")),
    ("hosts-with-port", rule(operation=Operation(hosts=("books.example.com:8080",))),
     request(host="books.example.com", authority="books.example.com:8080"),
     request(host="books.example.com", authority="books.example.com")),
    ("hosts-any-port", rule(operation=Operation(hosts=("books.example.com:*",))),
     request(host="books.example.com", authority="books.example.com:9"),
     request(host="books.example.com", authority="books.example.com")),
    ("notHosts", rule(operation=Operation(not_hosts=("admin.example.com",))), request(),
     request(host="admin.example.com")),
    ("ports", rule(operation=Operation(ports=("9080",))), request(), request(port=9081)),
    ("notPorts", rule(operation=Operation(not_ports=("9081",))), request(), request(port=9081)),
    ("when-header", rule(None, None, When("request.headers[X-Token]", ("abc", "def*"))),
     request(headers={"x-token": "defg"}), request(headers={"x-token": "xyz"})),
    ("when-header-absent", rule(None, None, When("request.headers[x-token]", ("*",))),
     request(headers={"x-token": "1"}), request()),
    ("when-header-notValues", rule(None, None, When("request.headers[x-env]", not_values=("prod",))),
     request(), request(headers={"x-env": "prod"})),
    ("when-header-duplicates-merged", rule(None, None, When("request.headers[x-a]", ("1,2",))),
     request(headers={"x-a": "1", "X-A": "2"}), request(headers={"x-a": "1"})),
    ("when-source.principal", rule(None, None, When("source.principal", (GW,))), request(),
     request(principal=None)),
    ("when-source.namespace", rule(None, None, When("source.namespace", ("bookinfo",))), request(),
     request(principal=OTHER_NS)),
    # `when: source.serviceAccount` ("sa" or "ns/sa"), compiled by the control plane to "ns/sa"
    ("when-source.serviceAccount", rule(None, None, When("source.serviceAccount", ("bookinfo/gw",))), request(),
     request(principal=OTHER_NS)),
    ("when-source.serviceAccount-plaintext", rule(None, None, When("source.serviceAccount", ("bookinfo/gw",))),
     request(), request(principal=None)),
    ("when-source.ip", rule(None, None, When("source.ip", ("10.0.0.0/8",))), request(),
     request(peer_ip="192.168.0.1")),
    ("when-remote.ip", rule(None, None, When("remote.ip", ("203.0.113.7",))),
     request(headers={"x-forwarded-for": "203.0.113.7"}), request()),
    ("when-destination.ip", rule(None, None, When("destination.ip", ("10.0.0.9",))), request(),
     request(local_ip="10.0.0.8")),
    ("when-destination.port", rule(None, None, When("destination.port", ("9080",))), request(),
     request(port=80)),
    ("when-sni", rule(None, None, When("connection.sni", ("*.example.com",))), request(sni="books.example.com"),
     request()),
    ("when-sni-exact", rule(None, None, When("connection.sni", (ISTIO_SNI,))), request(sni=ISTIO_SNI),
     request(sni="outbound_.9080_.v1_.books.bookinfo.svc.cluster.local")),
    ("when-sni-prefix", rule(None, None, When("connection.sni", ("outbound_.9080_.*",))), request(sni=ISTIO_SNI),
     request(sni="outbound_.9081_._.books.bookinfo.svc.cluster.local")),
    ("when-sni-present", rule(None, None, When("connection.sni", ("*",))), request(sni=ISTIO_SNI), request()),
    ("when-sni-notValues", rule(None, None, When("connection.sni", not_values=("*.example.com",))),
     request(sni=ISTIO_SNI), request(sni="books.example.com")),
    ("when-auth.principal", rule(None, None, When("request.auth.principal", ("https://issuer.example/*",))),
     request(auth=jwt()), request()),
    ("when-auth.audiences", rule(None, None, When("request.auth.audiences", ("books",))), request(auth=jwt()),
     request(auth=jwt(audiences=("ratings",)))),
    ("when-auth.presenter", rule(None, None, When("request.auth.presenter", ("ui",))), request(auth=jwt()),
     request(auth=jwt(presenter=None))),
    ("when-claims-list", rule(None, None, When("request.auth.claims[groups]", ("admin",))),
     request(auth=jwt(claims={"groups": ["dev", "admin"]})), request(auth=jwt(claims={"groups": ["dev"]}))),
    ("when-claims-nested", rule(None, None, When("request.auth.claims[realm][role]", ("editor",))),
     request(auth=jwt(claims={"realm": {"role": "editor"}})), request(auth=jwt(claims={"role": "editor"}))),
    ("when-claims-notValues", rule(None, None, When("request.auth.claims[groups]", not_values=("banned",))),
     request(auth=jwt(claims={"groups": ["dev"]})), request(auth=jwt(claims={"groups": ["dev", "banned"]}))),
]
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize(("name", "the_rule", "matching", "other"), CASES, ids=IDS)
def test_allow_admits_only_what_its_rule_matches(name, the_rule, matching, other):
    allow = policy(security.ALLOW, the_rule, name="bookinfo/allow")
    decision = decide(allow, req=matching)
    assert (decision.allowed, decision.policy) == (True, "bookinfo/allow")
    if other is not None:
        assert not decide(allow, req=other).allowed


@pytest.mark.parametrize(("name", "the_rule", "matching", "other"), CASES, ids=IDS)
def test_deny_refuses_only_what_its_rule_matches(name, the_rule, matching, other):
    deny = policy(security.DENY, the_rule, name="bookinfo/deny")
    decision = decide(deny, req=matching)
    assert (decision.allowed, decision.policy) == (False, "bookinfo/deny")
    if other is not None:
        assert decide(deny, req=other).allowed


@pytest.mark.parametrize(("name", "the_rule", "matching", "other"), CASES, ids=IDS)
def test_audit_marks_what_its_rule_matches_and_changes_nothing(name, the_rule, matching, other):
    audit = policy(security.AUDIT, the_rule, name="bookinfo/audit")
    decision = decide(audit, req=matching)
    assert (decision.allowed, decision.audited) == (True, "bookinfo/audit")
    if other is not None:
        assert (decide(audit, req=other).allowed, decide(audit, req=other).audited) == (True, "")


def test_deny_is_evaluated_before_allow():
    allow = policy(security.ALLOW, rule(Source(principals=(GW,))), name="bookinfo/allow-gw")
    deny = policy(security.DENY, rule(operation=Operation(methods=("DELETE",))), name="bookinfo/no-delete")
    assert decide(allow, deny, req=request("DELETE")).policy == "bookinfo/no-delete"
    assert not decide(allow, deny, req=request("DELETE")).allowed
    assert decide(allow, deny, req=request("GET")).allowed


def test_without_allow_policies_what_no_deny_matches_is_allowed():
    deny = policy(security.DENY, rule(Source(namespaces=("other",))))
    decision = decide(deny)
    assert (decision.allowed, decision.policy) == (True, "")


def test_allow_policies_exist_and_none_matches_denies():
    allow = policy(security.ALLOW, rule(Source(principals=(BOOKS,))))
    assert (decide(allow).allowed, decide(allow).policy) == (False, "")


def test_spec_empty_allow_policy_denies_everything():
    assert not decide(policy(security.ALLOW)).allowed
    assert not decide(policy(security.ALLOW), req=request(principal=None)).allowed


def test_a_deny_policy_without_rules_matches_nothing():
    assert decide(policy(security.DENY)).allowed


def test_an_empty_rule_matches_every_request():
    allow_all = policy(security.ALLOW, model.AuthzRule())
    assert decide(allow_all, req=request(principal=None, method="PATCH", path="/x")).allowed


def test_any_allow_policy_may_admit():
    first = policy(security.ALLOW, rule(Source(principals=(BOOKS,))), name="bookinfo/books")
    second = policy(security.ALLOW, rule(operation=Operation(methods=("GET",))), name="bookinfo/get")
    assert decide(first, second).policy == "bookinfo/get"


def test_inside_a_source_every_field_must_match_and_sources_are_ored():
    both = rule(Source(principals=(GW,), ip_blocks=("10.0.0.0/24",)))
    allow = policy(security.ALLOW, both)
    assert decide(allow).allowed
    assert not decide(allow, req=request(peer_ip="10.9.9.9")).allowed
    either = model.AuthzRule(sources=(Source(principals=(BOOKS,)), Source(ip_blocks=("10.0.0.0/24",))))
    assert decide(policy(security.ALLOW, either), req=request(peer_ip="10.0.0.1")).allowed


def test_sources_operations_and_conditions_are_anded():
    the_rule = model.AuthzRule((Source(principals=(GW,)),), (Operation(methods=("GET",)),),
                               (When("request.headers[x-ok]", ("1",)),))
    allow = policy(security.ALLOW, the_rule)
    assert decide(allow, req=request(headers={"x-ok": "1"})).allowed
    assert not decide(allow, req=request("POST", headers={"x-ok": "1"})).allowed
    assert not decide(allow, req=request(principal=BOOKS, headers={"x-ok": "1"})).allowed
    assert not decide(allow).allowed


def test_values_and_not_values_together():
    the_rule = rule(operation=Operation(paths=("/books*",), not_paths=("/books/admin*",)))
    allow = policy(security.ALLOW, the_rule)
    assert decide(allow, req=request(path="/books/1")).allowed
    assert not decide(allow, req=request(path="/books/admin/x")).allowed


def test_audit_does_not_change_the_decision():
    audit = policy(security.AUDIT, model.AuthzRule(), name="bookinfo/audit-all")
    deny_all = policy(security.ALLOW)
    decision = decide(audit, deny_all)
    assert (decision.allowed, decision.audited) == (False, "bookinfo/audit-all")


@pytest.mark.parametrize(("action", "matches", "shadow"), [
    (security.DENY, True, (False,)),
    (security.DENY, False, (True,)),
    (security.ALLOW, True, (True,)),
    (security.ALLOW, False, (False,)),
])
def test_dry_run_policies_are_counted_never_enforced(action, matches, shadow):
    source = Source(principals=(GW,) if matches else (BOOKS,))
    decision = decide(policy(action, rule(source), dry_run=True))
    assert (decision.allowed, decision.policy, decision.shadow) == (True, "", shadow)


def test_dry_run_next_to_enforced_policies():
    dry_deny = policy(security.DENY, model.AuthzRule(), name="bookinfo/dry", dry_run=True)
    allow = policy(security.ALLOW, rule(Source(principals=(GW,))), name="bookinfo/allow")
    decision = decide(dry_deny, allow)
    assert (decision.allowed, decision.policy, decision.shadow) == (True, "bookinfo/allow", (False,))
    compiled = authz.compile_policies((dry_deny, allow))
    assert repr(compiled) == "<Policies audit=0 deny=0 allow=1 dry-run=1>"


@pytest.mark.parametrize(("action", "allowed"), [(security.ALLOW, False), (security.DENY, False)])
def test_a_condition_key_the_proxy_cannot_evaluate_fails_closed(action, allowed):
    the_rule = rule(None, None, When("experimental.envoy.filters.network.mysql_proxy[db.table]", ("x",)))
    assert decide(policy(action, the_rule)).allowed is allowed


def test_no_policies_compile_to_nothing():
    assert authz.compile_policies(()) is None
