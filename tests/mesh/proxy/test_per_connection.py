"""Work done once per connection or per view instead of per request: the peer's parsed identity
(`tls.Peer`, cached on the connection), the local address, the Host header decoded only when a policy
compares a host with a port, JWT header prefixes encoded per rule, mesh readiness through
`MeshTls.ready`, and the gateway's TLS versions compared as `ssl.TLSVersion` values."""

from __future__ import annotations

import ssl
from types import SimpleNamespace

import pytest

from mesh.proxy import authz, gateway_tls, jwt_authn, origination, tls
from mesh.proxy.matching import RequestHead
from mesh.view import model, security
from tests.mesh.proxy.fakes import Proxy, bookinfo_view

BOOKS_SA = "spiffe://cluster.local/ns/bookinfo/sa/books"


@pytest.mark.parametrize(("spiffe_id", "principal", "namespace", "account"), [
    (BOOKS_SA, "cluster.local/ns/bookinfo/sa/books", "bookinfo", "bookinfo/books"),
    ("cluster.local/ns/x/sa/y", "cluster.local/ns/x/sa/y", "x", "x/y"),  # no scheme: taken as it is
    ("spiffe://td/ns/only", "td/ns/only", "only", None),
    ("spiffe://td/ns//sa/y", "td/ns//sa/y", "", None),  # an empty namespace has no service account
    ("spiffe://td/workload", "td/workload", None, None),
    (None, None, None, None),
    ("", None, None, None),
])
def test_one_parser_gives_principal_namespace_and_service_account(spiffe_id, principal, namespace, account):
    peer = tls.Peer.of(spiffe_id)
    assert (peer.principal, peer.namespace, peer.service_account) == (principal, namespace, account)
    if not spiffe_id:
        assert peer is tls.NO_PEER


def test_a_hand_built_request_parses_its_principal_like_the_connection_does():
    request = authz.Request("GET", "/", "books", principal="cluster.local/ns/bookinfo/sa/books")
    assert (request.namespace, request.service_account) == ("bookinfo", "bookinfo/books")
    plain = authz.Request("GET", "/", "books")
    assert (plain.principal, plain.namespace, plain.service_account) == (None, None, None)


async def test_the_peer_is_parsed_once_per_connection_and_again_when_the_identity_changes():
    conn = Proxy(bookinfo_view(), model.INBOUND).client().conn
    assert conn.peer is tls.NO_PEER
    conn.peer_identity = BOOKS_SA
    first = conn.peer
    assert first.namespace == "bookinfo" and conn.peer is first  # cached: no parsing per request
    conn.peer_identity = "spiffe://cluster.local/ns/other/sa/gw"
    assert conn.peer.namespace == "other"
    conn.peer_identity = None
    assert conn.peer is tls.NO_PEER


async def test_the_local_address_is_read_from_the_connection_once_and_only_when_asked():
    conn = Proxy(bookinfo_view(), model.INBOUND).client().conn
    reads = []
    conn.transport.get_extra_info = lambda name: reads.append(name) or ("10.0.0.9", 15006)
    request = authz.Request("GET", "/", "books", conn=conn)
    assert reads == []
    assert request.local_ip == "10.0.0.9" and request.sni == ""
    assert authz.Request("GET", "/", "books", conn=conn).local_ip == "10.0.0.9"
    assert reads == ["sockname"]


def test_the_host_header_is_decoded_only_for_a_host_with_a_port():
    bare = authz.Hosts(("books",))
    request = authz.Request("GET", "/", "other", host_header=b"Other:9080")
    assert not bare.match(request)
    assert request._authority is None, "no port-ful host value: the Host header is never decoded"
    assert authz.Hosts(("other:9080",)).match(request) and request.authority == "other:9080"
    assert authz.Request("GET", "/", "books").authority == "books"


def test_jwt_header_prefixes_are_encoded_once_per_rule_and_rewrite_drops_every_token_header():
    spec = model.JwtRule("https://issuer.example", '{"keys": []}', "bookinfo/jwt",
                         from_headers=(("x-jwt", "Tok "), ("authorization", "Bearer "), ("x-jwt", "")))
    rule = jwt_authn.CompiledJwtRule(spec)
    assert rule.token_prefixes == {b"x-jwt": (b"Tok ", b""), b"authorization": (b"Bearer ",)}
    head = RequestHead("GET", "/", "books", 9080, [
        (b"authorization", b"Basic abc"), (b"x-jwt", b"other"), (b"x-jwt", b"Tok a.b.c"), (b"accept", b"*/*")])
    auth = SimpleNamespace(rule=rule, token="a.b.c", claims={})
    jwt_authn.JwtAuthenticator((), lambda: 0.0).rewrite(head, auth)
    # x-jwt matched (every x-jwt header goes); authorization did not carry "Bearer " (it stays)
    assert head.headers == [(b"authorization", b"Basic abc"), (b"accept", b"*/*")]


def test_mesh_readiness_is_meshtls_ready(tmp_path):
    runtime = SimpleNamespace(mesh_tls=None)
    origin = origination.Origination(runtime)
    assert not origin.ready()
    runtime.mesh_tls = tls.MeshTls(tmp_path)
    assert not origin.ready() and not runtime.mesh_tls.ready
    runtime.mesh_tls.server = runtime.mesh_tls.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert origin.ready() and runtime.mesh_tls.ready


def test_insecure_skip_verify_builds_a_context_that_checks_nothing():
    settings = model.UpstreamTls(security.TLS_SIMPLE, insecure_skip_verify=True)
    ctx = origination.build_context(settings)
    assert (ctx.check_hostname, ctx.verify_mode) == (False, ssl.CERT_NONE)


@pytest.mark.parametrize(("negotiated", "minimum", "below"), [
    ("TLSv1.2", "TLSV1_2", False), ("TLSv1.3", "TLSV1_2", False), ("TLSv1.3", "TLSV1_3", False),
    ("TLSv1.2", "TLSV1_3", True), ("TLSv1.1", "TLSV1_2", True), ("TLSv1", "TLSV1_2", True),
    ("SSLv3", "TLSV1_2", True), (None, "TLSV1_2", True),
])
def test_negotiated_versions_compare_with_the_minimum_as_tls_versions(negotiated, minimum, below):
    got = gateway_tls._NEGOTIATED.get(negotiated, ssl.TLSVersion.MINIMUM_SUPPORTED)
    assert (got < gateway_tls.VERSIONS[minimum]) is below
