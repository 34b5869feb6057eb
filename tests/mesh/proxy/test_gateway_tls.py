"""Gateway listeners on loopback: TLS termination chosen by SNI, MUTUAL client certificates, ISTIO_MUTUAL,
minimum protocol, httpsRedirect, and views whose certificate files cannot be loaded."""

from __future__ import annotations

import dataclasses
import ssl
import time

import pytest

from mesh.proxy import tls
from mesh.view import model, security
from tests import pki
from tests.mesh.proxy import tlsnet
from tests.mesh.proxy.tlsnet import http, refused

HTTPS = 443


def server_files(ca, tmp_path, host: str) -> tuple[str, str]:
    chain, key = ca.issue_server([host], now=time.time())
    return (tlsnet.write_pem(tmp_path, f"{host}.pem", chain), tlsnet.write_pem(tmp_path, f"{host}.key", key))


def simple(ca, tmp_path, host: str, **fields) -> model.ServerTls:
    cert, key = server_files(ca, tmp_path, host)
    return model.ServerTls(fields.pop("mode", security.TLS_SIMPLE), (host,), cert, key, **fields)


async def gateway(servers=(), https_redirect=False, material=None, policies=()) -> tlsnet.Sidecar:
    (local,) = tlsnet.free_ports(1)
    view = tlsnet.gateway_view(HTTPS, servers, https_redirect)
    if policies:
        view = dataclasses.replace(view, security=model.Security(policies=policies))
    return await tlsnet.sidecar("istio-ingressgateway", "istio-ingressgateway", material, lambda *_: view,
                                role="gateway", port_map={HTTPS: local})


def port_of(gw: tlsnet.Sidecar) -> int:
    return gw.proxy.port_map[HTTPS]


def client(ca, material: tls.MeshTls | None = None, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = tlsnet.client_context(material, ca.root_pem)
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def sans(answer: tlsnet.Answer) -> list[str]:
    return [value for _, value in answer.peercert["subjectAltName"]]


@pytest.mark.uvloop
async def test_simple_servers_are_chosen_by_sni_the_first_is_the_default(ca, tmp_path):
    gw = await gateway((simple(ca, tmp_path, "a.example.com"), simple(ca, tmp_path, "b.example.com")))
    try:
        for sni, served in (("a.example.com", "a.example.com"), ("b.example.com", "b.example.com"),
                            ("", "a.example.com"), ("c.example.com", "a.example.com")):
            answer = await http(port_of(gw), host=sni or "x", ctx=client(ca), sni=sni)
            assert (answer.status, answer.body, sans(answer)) == (200, b"gateway ok", [served])
        assert await refused(port_of(gw))  # plaintext on a TLS port
        assert gw.counter("downstream_cx_tls_handshakes_total") == 4
        assert gw.counter("downstream_cx_tls_failures_total", reason="handshake") == 1
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_wildcard_hosts_match_by_longest_suffix(ca, tmp_path):
    wild = simple(ca, tmp_path, "*.example.com")
    exact = simple(ca, tmp_path, "api.example.com")
    gw = await gateway((wild, exact))
    try:
        assert sans(await http(port_of(gw), ctx=client(ca), sni="api.example.com")) == ["api.example.com"]
        assert sans(await http(port_of(gw), ctx=client(ca), sni="www.example.com")) == ["*.example.com"]
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_the_connection_carries_the_sni_the_client_sent_not_the_server_chosen(ca, tmp_path):
    gw = await gateway((simple(ca, tmp_path, "a.example.com"), simple(ca, tmp_path, "b.example.com")))
    try:
        for sni in ("b.example.com", "c.example.com", ""):  # c: no such server, a (the first) serves it
            async with tlsnet.kept_open(port_of(gw), ctx=client(ca), sni=sni) as held:
                assert held.status == 200
                assert held.accepted_by(gw.runtime).sni == sni
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_mutual_requires_a_client_certificate_from_its_ca(ca, tmp_path):
    roots = tlsnet.write_pem(tmp_path, "clients-root.pem", ca.root_pem)
    gw = await gateway((simple(ca, tmp_path, "m.example.com", mode=security.TLS_MUTUAL, ca_file=roots),))
    user = tlsnet.mesh(ca, tmp_path, "user")
    stranger = tlsnet.mesh(pki.make_ca(), tmp_path, "stranger")
    try:
        assert await refused(port_of(gw), ctx=client(ca), sni="m.example.com")
        assert await refused(port_of(gw), ctx=client(ca, stranger), sni="m.example.com")
        answer = await http(port_of(gw), ctx=client(ca, user), sni="m.example.com")
        assert answer.status == 200 and sans(answer) == ["m.example.com"]
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_mutual_subject_alt_names_limit_the_accepted_clients(ca, tmp_path):
    roots = tlsnet.write_pem(tmp_path, "clients-root.pem", ca.root_pem)
    server = simple(ca, tmp_path, "m.example.com", mode=security.TLS_MUTUAL, ca_file=roots,
                    subject_alt_names=(tlsnet.spiffe("partner"),))
    gw = await gateway((server,))
    try:
        assert await refused(port_of(gw), ctx=client(ca, tlsnet.mesh(ca, tmp_path, "user")), sni="m.example.com")
        assert gw.counter("downstream_cx_tls_failures_total", reason="policy") == 1
        answer = await http(port_of(gw), ctx=client(ca, tlsnet.mesh(ca, tmp_path, "partner")), sni="m.example.com")
        assert answer.status == 200
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_one_port_with_simple_and_mutual_servers_enforces_each(ca, tmp_path):
    """OpenSSL keeps the first context's verify mode when SNI switches: the per-server requirement is
    checked after the handshake, before a byte of the request is read."""
    roots = tlsnet.write_pem(tmp_path, "clients-root.pem", ca.root_pem)
    gw = await gateway((simple(ca, tmp_path, "open.example.com"),
                        simple(ca, tmp_path, "m.example.com", mode=security.TLS_MUTUAL, ca_file=roots)))
    user = tlsnet.mesh(ca, tmp_path, "user")
    try:
        assert (await http(port_of(gw), ctx=client(ca), sni="open.example.com")).status == 200
        assert await refused(port_of(gw), ctx=client(ca), sni="m.example.com")
        assert gw.counter("downstream_cx_tls_failures_total", reason="policy") == 1
        assert (await http(port_of(gw), ctx=client(ca, user), sni="m.example.com")).status == 200
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_optional_mutual_verifies_a_client_certificate_when_one_is_sent(ca, tmp_path):
    """Istio's OPTIONAL_MUTUAL: the gateway asks for a client certificate and verifies one that is sent
    (chain to the server's CA, then its subjectAltNames), but a client without one gets through."""
    roots = tlsnet.write_pem(tmp_path, "clients-root.pem", ca.root_pem)
    server = simple(ca, tmp_path, "o.example.com", mode=security.TLS_OPTIONAL_MUTUAL, ca_file=roots,
                    subject_alt_names=(tlsnet.spiffe("partner"), tlsnet.spiffe("user")))
    gw = await gateway((server,))
    user = tlsnet.mesh(ca, tmp_path, "user")
    try:
        answer = await http(port_of(gw), ctx=client(ca), sni="o.example.com")
        assert answer.status == 200 and sans(answer) == ["o.example.com"]
        async with tlsnet.kept_open(port_of(gw), ctx=client(ca, user), sni="o.example.com") as held:
            assert held.status == 200
            peer = held.accepted_by(gw.runtime).transport.get_extra_info("peercert")
            assert [value for _, value in peer["subjectAltName"]] == [tlsnet.spiffe("user")]
        stranger = tlsnet.mesh(pki.make_ca(), tmp_path, "partner")  # the right name from another CA
        assert await refused(port_of(gw), ctx=client(ca, stranger), sni="o.example.com")
        assert gw.counter("downstream_cx_tls_failures_total", reason="handshake") == 1
        outsider = tlsnet.mesh(ca, tmp_path, "outsider")  # the right CA, a name not accepted
        assert await refused(port_of(gw), ctx=client(ca, outsider), sni="o.example.com")
        assert gw.counter("downstream_cx_tls_failures_total", reason="policy") == 1
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_optional_mutual_needs_its_ca_file(ca, tmp_path):
    gw = await gateway()
    try:
        server = simple(ca, tmp_path, "o.example.com", mode=security.TLS_OPTIONAL_MUTUAL)
        with pytest.raises(model.ViewError, match="OPTIONAL_MUTUAL needs ca_file"):
            await gw.proxy.apply_view(tlsnet.gateway_view(HTTPS, (server,)), "v2")
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_istio_mutual_serves_the_gateway_workload_certificate(ca, tmp_path):
    material = tlsnet.mesh(ca, tmp_path, "istio-ingressgateway")
    gw = await gateway((model.ServerTls(security.TLS_ISTIO_MUTUAL, ("*",)),), material=material)
    try:
        answer = await http(port_of(gw), ctx=client(ca, tlsnet.mesh(ca, tmp_path, "user")))
        assert answer.status == 200 and sans(answer) == [tlsnet.spiffe("istio-ingressgateway")]
        assert await refused(port_of(gw), ctx=client(ca))
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_min_protocol_is_honoured(ca, tmp_path):
    gw = await gateway((simple(ca, tmp_path, "a.example.com", min_protocol="TLSV1_3"),))
    try:
        assert await refused(port_of(gw), ctx=client(ca, maximum=ssl.TLSVersion.TLSv1_2), sni="a.example.com")
        assert (await http(port_of(gw), ctx=client(ca), sni="a.example.com")).status == 200
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_https_redirect_answers_every_request_with_a_301(ca, tmp_path):
    gw = await gateway(https_redirect=True)
    try:
        answer = await http(port_of(gw), "/gateway/books?id=1", host="bookinfo.example.com")
        assert answer.status == 301
        assert answer.headers["location"] == "https://bookinfo.example.com/gateway/books?id=1"
        answer = await http(port_of(gw), "/", host="bookinfo.example.com:80")
        assert answer.headers["location"] == "https://bookinfo.example.com/"
        (series,) = {s["response_code"] for s in gw.series("source")}
        assert series == 301
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_https_redirect_comes_after_authorization_as_envoys_rbac_filter_before_its_router(ca, tmp_path):
    no_admin = model.AuthzPolicy("istio-system/no-admin", security.DENY, (model.AuthzRule(
        operations=(model.AuthzOperation(paths=("/admin*",)),)),))
    gw = await gateway(https_redirect=True, policies=(no_admin,))
    try:
        denied = await http(port_of(gw), "/admin/users", host="bookinfo.example.com")
        assert (denied.status, denied.body) == (403, b"RBAC: access denied")
        assert "location" not in denied.headers
        assert (await http(port_of(gw), "/", host="bookinfo.example.com")).status == 301
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_authorization_before_a_redirect_compares_the_gateway_server_port(ca, tmp_path):
    on_this_port = model.AuthzPolicy("istio-system/port", security.ALLOW, (model.AuthzRule(
        operations=(model.AuthzOperation(ports=(str(HTTPS),)),)),))
    gw = await gateway(https_redirect=True, policies=(on_this_port,))
    try:
        assert (await http(port_of(gw), "/", host="bookinfo.example.com")).status == 301
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_a_request_over_tls_has_the_https_scheme(ca, tmp_path):
    """As Envoy sets :scheme from the connection: a redirect that keeps the scheme says https, and a
    VirtualService match on `scheme: https` sees it."""
    view = tlsnet.gateway_view(HTTPS, (simple(ca, tmp_path, "a.example.com"),))
    (table,) = view.route_tables
    moved = model.Route("moved", (model.RouteMatch(scheme=model.StringMatch("exact", "https")),),
                        redirect=model.Redirect(uri="/new"))
    view = dataclasses.replace(view, route_tables=(dataclasses.replace(table, virtual_hosts=(
        model.VirtualHost("all", ("*",), (moved,)),)),))
    (local,) = tlsnet.free_ports(1)
    gw = await tlsnet.sidecar("istio-ingressgateway", "istio-ingressgateway", None, lambda *_: view,
                              role="gateway", port_map={HTTPS: local})
    try:
        answer = await http(local, "/old", host="a.example.com", ctx=client(ca), sni="a.example.com")
        assert (answer.status, answer.headers["location"]) == (301, "https://a.example.com/new")
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_tls_settings_change_without_rebinding_and_bad_files_are_a_view_error(ca, tmp_path):
    gw = await gateway()
    listener = gw.proxy.servers[port_of(gw)][0]
    try:
        assert (await http(port_of(gw))).status == 200
        await gw.proxy.apply_view(tlsnet.gateway_view(HTTPS, (simple(ca, tmp_path, "a.example.com"),)), "v2")
        assert gw.proxy.servers[port_of(gw)][0] is listener
        assert (await http(port_of(gw), ctx=client(ca), sni="a.example.com")).status == 200
        missing = model.ServerTls(security.TLS_SIMPLE, ("b.example.com",), str(tmp_path / "nope.pem"),
                                  str(tmp_path / "nope.key"))
        with pytest.raises(model.ViewError, match="TLS"):
            await gw.proxy.apply_view(tlsnet.gateway_view(HTTPS, (missing,)), "v3")
        assert gw.runtime.view.version == "v2"
        assert (await http(port_of(gw), ctx=client(ca), sni="a.example.com")).status == 200
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_gateway_originates_auto_mtls_to_a_strict_sidecar(ca, tmp_path):
    runner, app_port = await tlsnet.start_app()
    books = await tlsnet.sidecar("books-v1", "books", tlsnet.mesh(ca, tmp_path, "books"),
                                 lambda inbound, _: tlsnet.inbound_view(inbound, app_port, security.STRICT))
    endpoint = tlsnet.books_endpoint(books.inbound, identity=tlsnet.spiffe("books"))
    route = model.Route("books", clusters=(model.WeightedCluster(tlsnet.BOOKS),))
    view = model.ProxyView(
        proxy="istio-ingressgateway.weir-system",
        listeners=(model.Listener("http.80", model.GATEWAY, 80, route_table="http.80"),),
        route_tables=(model.RouteTable("http.80", (model.VirtualHost("all", ("*",), (route,)),)),),
        clusters=(model.Cluster(tlsnet.BOOKS, service=tlsnet.SERVICE, port=9080),),
        endpoints=(model.ClusterEndpoints(tlsnet.BOOKS, (endpoint,)),),
    )
    (local,) = tlsnet.free_ports(1)
    gw = await tlsnet.sidecar("istio-ingressgateway", "istio-ingressgateway",
                              tlsnet.mesh(ca, tmp_path, "istio-ingressgateway"), lambda *_: view,
                              role="gateway", port_map={80: local})
    try:
        answer = await http(local, "/gateway/books", host="bookinfo.example.com")
        assert answer.status == 200 and answer.json()["path"] == "/gateway/books"
        (dest,) = books.series("destination")
        assert dest["source_principal"] == tlsnet.spiffe("istio-ingressgateway")
        assert dest["connection_security_policy"] == "mutual_tls"
    finally:
        await gw.proxy.shutdown()
        await books.proxy.shutdown()
        await runner.cleanup()
