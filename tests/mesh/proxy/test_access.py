"""Access control through `Forwarding` over mock transports: 403 `RBAC: access denied` with flag RBAC,
401 for a refused JWT, allowed requests reaching the app with the token removed, the normalized path,
the gateway's server port, and no enforcement on outbound."""

from __future__ import annotations

import dataclasses
import json
import random

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.proxy import access, routing
from mesh.view import model, security
from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, LOCAL_APP, Proxy, bookinfo_view, settle, to
from tests.mesh.proxy.test_downstream import labels

ISSUER = "https://issuer.example"
NOW = 1_700_000_000.0
BOOKS_SA = "spiffe://cluster.local/ns/bookinfo/sa/books"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def get(path: str = "/books", host: bytes = b"gw:9080", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n"


def secured(view: model.ProxyView, *policies: model.AuthzPolicy, jwt_rules: tuple = ()) -> model.ProxyView:
    return dataclasses.replace(view, security=model.Security(policies=policies, jwt_rules=jwt_rules))


def allow_books_only() -> model.AuthzPolicy:
    return model.AuthzPolicy("bookinfo/books-only", security.ALLOW, (model.AuthzRule(
        sources=(model.AuthzSource(principals=("cluster.local/ns/bookinfo/sa/books",)),)),))


@pytest.fixture(scope="module")
def signer():
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{**jwk, "kid": "k1"}]})

    def sign(**claims) -> str:
        payload = {"iss": ISSUER, "sub": "alice", "exp": NOW + 600, **claims}
        return jwt.encode(payload, key, algorithm="ES256", headers={"kid": "k1"})

    sign.jwks = jwks
    return sign


def inbound(view: model.ProxyView, clock: float = NOW) -> Proxy:
    proxy = Proxy(view, model.INBOUND)
    if proxy.runtime.view.access is not None and proxy.runtime.view.access.jwt is not None:
        proxy.runtime.view.access.jwt.clock = lambda: clock
    return proxy


async def test_a_denied_request_gets_403_rbac_and_never_reaches_the_app():
    proxy = inbound(secured(bookinfo_view(), allow_books_only()))
    client = proxy.client()
    client.send(get())
    await settle()
    (response,) = client.responses()
    assert (response.first, response.body) == ("403", b"RBAC: access denied")
    assert not proxy.upstreams and not client.transport.closed, "a 403 keeps the connection"
    ((key, count),) = proxy.series().items()
    assert (labels(key)["response_code"], labels(key)["response_flags"], count) == (403, "RBAC", 1)
    assert labels(key)["reporter"] == "destination"
    counters = proxy.runtime.counters
    assert (counters.get("rbac_denied_total"), counters.get("rbac_allowed_total")) == (1, 0)
    assert "weir_rbac_denied_total 1" in proxy.runtime.prometheus()


async def test_an_allowed_peer_reaches_the_app():
    proxy = inbound(secured(bookinfo_view(), allow_books_only()))
    client = proxy.client()
    client.conn.peer_identity, client.conn.secure = BOOKS_SA, True
    client.send(get())
    await settle()
    (up,) = proxy.upstreams
    assert (up.address, up.port) == (LOCAL_APP.address, LOCAL_APP.port)
    up.respond(OK)
    assert [r.first for r in client.responses()] == ["200"]
    assert proxy.runtime.counters.get("rbac_allowed_total") == 1


@pytest.mark.parametrize(("sni", "status"), [
    ("outbound_.9080_._.books.bookinfo.svc.cluster.local", "200"),
    ("outbound_.9080_.v2_.books.bookinfo.svc.cluster.local", "403"),
    ("", "403"),  # plaintext, or TLS without SNI
])
async def test_connection_sni_is_the_sni_the_connection_was_opened_with(sni, status):
    only_v1 = model.AuthzPolicy("bookinfo/sni", security.ALLOW, (model.AuthzRule(conditions=(
        model.AuthzCondition("connection.sni", ("outbound_.9080_._.*", "outbound_.9080_.v1_.*")),)),))
    proxy = inbound(secured(bookinfo_view(), only_v1))
    client = proxy.client()
    client.conn.sni, client.conn.secure = sni, True  # as mesh.proxy.inbound_tls sets them after the handshake
    client.send(get())
    await settle()
    if proxy.upstreams:
        proxy.upstreams[0].respond(OK)
    assert [r.first for r in client.responses()] == [status]


async def test_a_denied_request_then_an_allowed_one_on_the_same_connection():
    deny_admin = model.AuthzPolicy("bookinfo/no-admin", security.DENY, (model.AuthzRule(
        operations=(model.AuthzOperation(paths=("/admin*",)),)),))
    proxy = inbound(secured(bookinfo_view(), deny_admin))
    client = proxy.client()
    client.send(get("/public/../admin/users") + get("/books"))
    await settle()
    (up,) = proxy.upstreams
    (request,) = up.requests()
    assert request.first == "GET /books"
    up.respond(OK)
    assert [r.first for r in client.responses()] == ["403", "200"]


async def test_the_normalized_path_is_what_the_app_receives():
    audit_all = model.AuthzPolicy("bookinfo/audit", security.AUDIT, (model.AuthzRule(),))
    proxy = inbound(secured(bookinfo_view(), audit_all))
    client = proxy.client()
    client.send(get("/a/./b/../%63?q=/../x"))
    await settle()
    (request,) = proxy.upstreams[0].requests()
    assert request.first == "GET /a/c?q=/../x"
    assert proxy.runtime.counters.get("rbac_logged_total") == 1
    assert proxy.runtime.counters.get("rbac_allowed_total") == 0, "AUDIT alone enforces nothing"


async def test_dry_run_is_counted_and_not_enforced():
    deny_all = model.AuthzPolicy("bookinfo/dry", security.DENY, (model.AuthzRule(),), dry_run=True)
    proxy = inbound(secured(bookinfo_view(), deny_all))
    client = proxy.client()
    client.send(get())
    await settle()
    assert len(proxy.upstreams) == 1
    counters = proxy.runtime.counters
    assert (counters.get("rbac_shadow_denied_total"), counters.get("rbac_denied_total")) == (1, 0)


async def test_a_bad_token_gets_401_with_envoys_reason(signer):
    rule = model.JwtRule(ISSUER, signer.jwks)
    proxy = inbound(secured(bookinfo_view(), jwt_rules=(rule,)))
    client = proxy.client()
    client.send(get(extra=b"Authorization: Bearer " + signer(exp=NOW - 3600).encode() + b"\r\n"))
    await settle()
    (response,) = client.responses()
    assert (response.first, response.body) == ("401", b"Jwt is expired")
    assert response.header("www-authenticate") == 'Bearer realm="http://gw:9080/books", error="invalid_token"'
    assert not proxy.upstreams
    assert proxy.runtime.counters.get("jwt_authn_denied_total") == 1
    ((key, _),) = proxy.series().items()
    assert labels(key)["response_code"] == 401


async def test_a_valid_token_reaches_the_app_without_its_authorization_header(signer):
    rule = model.JwtRule(ISSUER, signer.jwks, output_claim_to_headers=(("x-user", "sub"),))
    require_jwt = model.AuthzPolicy("bookinfo/require-jwt", security.ALLOW, (model.AuthzRule(
        sources=(model.AuthzSource(request_principals=(f"{ISSUER}/*",)),)),))
    proxy = inbound(secured(bookinfo_view(), require_jwt, jwt_rules=(rule,)))
    client = proxy.client()
    client.send(get(extra=b"Authorization: Bearer " + signer().encode() + b"\r\nx-app: 1\r\n"))
    await settle()
    (request,) = proxy.upstreams[0].requests()
    assert request.header("authorization") is None
    assert (request.header("x-user"), request.header("x-app")) == ("alice", "1")
    proxy.upstreams[0].respond(OK)
    assert [r.first for r in client.responses()] == ["200"]

    client.send(get())  # no token: passes authentication, then no request principal for the ALLOW policy
    await settle()
    assert [r.first for r in client.responses()] == ["200", "403"]


def gateway_view(*policies: model.AuthzPolicy) -> model.ProxyView:
    view = bookinfo_view()
    return secured(dataclasses.replace(
        view,
        listeners=(model.Listener("http.80", model.GATEWAY, 80, route_table="http.80"),),
        route_tables=(model.RouteTable("http.80", (model.VirtualHost("any", ("*",), (to(BOOKS),)),)),),
    ), *policies)


@pytest.mark.parametrize(("port", "reaches"), [("80", True), ("8080", False)])
async def test_a_gateway_matches_ports_against_the_gateway_server_port(port, reaches):
    on_port = model.AuthzPolicy("weir-system/port", security.ALLOW, (model.AuthzRule(
        operations=(model.AuthzOperation(ports=(port,)),)),))
    proxy = Proxy(gateway_view(on_port), model.GATEWAY, "http.80")
    client = proxy.client()
    client.send(get(host=b"books.example.com:8080"))
    await settle()
    if reaches:
        assert (proxy.upstreams[0].address, proxy.upstreams[0].port) == (BOOKS_V1.address, BOOKS_V1.port)
    else:
        assert [r.first for r in client.responses()] == ["403"] and not proxy.upstreams


async def test_outbound_requests_are_not_checked():
    deny_all = model.AuthzPolicy("bookinfo/deny-all", security.ALLOW)
    proxy = Proxy(secured(bookinfo_view(), deny_all), model.OUTBOUND)
    client = proxy.client()
    client.send(get(host=b"books:9080"))
    await settle()
    assert len(proxy.upstreams) == 1
    assert proxy.runtime.counters.get("rbac_denied_total") == 0


def test_a_view_without_policies_or_jwt_rules_compiles_to_nothing():
    assert routing.CompiledView(bookinfo_view(), "v1", random.Random(1)).access is None
    compiled = routing.CompiledView(secured(bookinfo_view(), allow_books_only()), "v1", random.Random(1)).access
    assert (compiled.inbound_port, compiled.jwt) == (9080, None)
    assert repr(compiled) == "<Access jwt=None policies=<Policies audit=0 deny=0 allow=1 dry-run=0>>"


def test_a_policy_value_that_does_not_parse_nacks_the_view():
    bad = model.AuthzPolicy("bookinfo/bad", security.ALLOW, (model.AuthzRule(
        sources=(model.AuthzSource(ip_blocks=("10.0.0.0/99",)),)),))
    with pytest.raises(model.ViewError, match="authorization policy"):
        access.compile_access(secured(bookinfo_view(), bad))


async def test_a_gateway_believes_the_connection_not_a_forged_x_forwarded_for():
    """remoteIpBlocks at a gateway with no trusted proxies (Istio's default numTrustedProxies 0): the client
    is the connection's peer, whatever X-Forwarded-For it writes."""
    only_partners = model.AuthzPolicy("istio-system/partners", security.ALLOW, (model.AuthzRule(
        sources=(model.AuthzSource(remote_ip_blocks=("203.0.113.0/24",)),)),))
    proxy = Proxy(gateway_view(only_partners), model.GATEWAY, "http.80")
    forger = proxy.client(peer=("10.0.0.99", 40000))
    forger.send(get(host=b"books.example.com", extra=b"X-Forwarded-For: 203.0.113.7\r\n"))
    partner = proxy.client(peer=("203.0.113.8", 40001))
    partner.send(get(host=b"books.example.com"))
    await settle()
    assert [r.first for r in forger.responses()] == ["403"]
    assert len(proxy.upstreams) == 1  # the partner's request went through


async def test_a_gateway_behind_trusted_proxies_believes_their_x_forwarded_for_entries():
    """--trusted-proxies 1 (numTrustedProxies: an L7 load balancer in front): the client is the entry that
    load balancer appended, the rightmost; what the client wrote before it is still not believed."""
    only_partners = model.AuthzPolicy("istio-system/partners", security.ALLOW, (model.AuthzRule(
        sources=(model.AuthzSource(remote_ip_blocks=("203.0.113.0/24",)),)),))
    proxy = Proxy(gateway_view(only_partners), model.GATEWAY, "http.80")
    proxy.runtime.trusted_proxies = 1
    balancer = ("10.0.0.99", 40000)
    partner = proxy.client(peer=balancer)
    partner.send(get(host=b"books.example.com", extra=b"X-Forwarded-For: 198.51.100.1, 203.0.113.7\r\n"))
    forger = proxy.client(peer=balancer)
    forger.send(get(host=b"books.example.com", extra=b"X-Forwarded-For: 203.0.113.7, 198.51.100.1\r\n"))
    await settle()
    assert [r.first for r in forger.responses()] == ["403"]
    assert len(proxy.upstreams) == 1


def test_trusted_proxies_is_a_count():
    from mesh.proxy import __main__ as main

    base = ["--id", "x", "--workload", "x", "--bootstrap", "view.json", "--role", "gateway"]
    assert main.parse_args(base).trusted_proxies == 0
    assert main.parse_args([*base, "--trusted-proxies", "2"]).trusted_proxies == 2
    for wrong in (["--trusted-proxies", "-1"], ["--role", "sidecar", "--trusted-proxies", "1"]):
        with pytest.raises(SystemExit):
            main.parse_args([*base, *wrong])
