"""Outbound TLS origination on loopback: auto mTLS sidecar to sidecar, peer identity checks, SIMPLE and
MUTUAL to TLS servers, pools that never mix plaintext and TLS, and certificate rotation under load."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time

import pytest

from mesh.proxy import origination, tls
from mesh.proxy import pool as pool_mod
from mesh.view import model, security
from tests import pki
from tests.mesh.proxy import tlsnet
from tests.mesh.proxy.tlsnet import books_endpoint, http, inbound_view, outbound_view, spiffe


class Mesh:
    """gw-v1's sidecar (outbound) → books-v1's sidecar (inbound, `mode`) → the books app."""

    def __init__(self) -> None:
        self.cars: list[tlsnet.Sidecar] = []
        self.runners = []

    async def books(self, ca, tmp_path, mode=security.PERMISSIVE, account="books") -> tlsnet.Sidecar:
        runner, app_port = await tlsnet.start_app()
        self.runners.append(runner)
        material = tlsnet.mesh(ca, tmp_path, account)
        car = await tlsnet.sidecar("books-v1", account, material,
                                   lambda inbound, _: inbound_view(inbound, app_port, mode))
        self.cars.append(car)
        return car

    async def gw(self, material, view) -> tlsnet.Sidecar:
        car = await tlsnet.sidecar("gw-v1", "gw", material, lambda inbound, outbound: view)
        self.cars.append(car)
        return car

    async def close(self) -> None:
        for car in self.cars:
            await car.proxy.shutdown()
        for runner in self.runners:
            await runner.cleanup()


@pytest.fixture
async def net():
    mesh = Mesh()
    yield mesh
    await mesh.close()


async def call(gw: tlsnet.Sidecar, path: str = "/books", host: str = "books:9080") -> tlsnet.Answer:
    return await http(gw.outbound, path, host=host, proxy=True)


@pytest.mark.uvloop
async def test_auto_mtls_between_sidecars_reuses_one_handshake_and_reports_principals(ca, tmp_path):
    net = Mesh()
    try:
        books = await net.books(ca, tmp_path, security.STRICT)
        gw = await net.gw(tlsnet.mesh(ca, tmp_path, "gw"),
                          outbound_view((books_endpoint(books.inbound, identity=spiffe("books")),)))
        for i in range(5):
            answer = await call(gw, f"/books/{i}")
            assert answer.status == 200 and answer.json()["path"] == f"/books/{i}"
        assert gw.counter("upstream_cx_tls_handshakes_total") == 1  # paid per connection, not per request
        assert books.counter("downstream_cx_tls_handshakes_total") == 1
        (source,) = gw.series("source")
        assert (source["count"], source["connection_security_policy"]) == (5, "unknown")
        assert (source["source_principal"], source["destination_principal"]) == (spiffe("gw"), spiffe("books"))
        (dest,) = books.series("destination")
        assert dest["connection_security_policy"] == "mutual_tls" and dest["source_workload"] == "gw-v1"
        assert (dest["source_principal"], dest["destination_principal"]) == (spiffe("gw"), spiffe("books"))
        text = books.runtime.prometheus()
        assert f'connection_security_policy="mutual_tls",source_principal="{spiffe("gw")}"' in text
        assert "weir_downstream_cx_tls_handshakes_total 1" in text
    finally:
        await net.close()


@pytest.mark.uvloop
@pytest.mark.parametrize("settings", [
    None,  # auto mTLS: the endpoint's identity
    model.UpstreamTls(security.TLS_ISTIO_MUTUAL),  # explicit: the endpoint's identity too
    model.UpstreamTls(security.TLS_ISTIO_MUTUAL, subject_alt_names=(spiffe("reviews"),)),  # DR SANs win
])
async def test_a_peer_with_the_wrong_spiffe_id_is_a_connect_failure(ca, tmp_path, settings):
    net = Mesh()
    try:
        books = await net.books(ca, tmp_path, security.STRICT, account="impostor")
        identity = spiffe("books") if settings is None or not settings.subject_alt_names else spiffe("impostor")
        gw = await net.gw(tlsnet.mesh(ca, tmp_path, "gw"),
                          outbound_view((books_endpoint(books.inbound, identity=identity),), settings))
        answer = await call(gw)
        assert answer.status == 503 and b"connection failure" in answer.body
        (source,) = gw.series("source")
        assert source["response_flags"] == "UF,URX"  # connect failures are retried (2), then reported
        assert gw.counter("upstream_cx_tls_failures_total", reason="identity") == 3
        assert gw.counter("upstream_connect_fail_total") == 3
        assert books.series("destination") == []  # nothing was sent to the impostor
    finally:
        await net.close()


ISTIO_SNI = f"outbound_.9080_._.{tlsnet.SERVICE}"  # the SNI Istio sends for BOOKS (no subset)


def sni_seen_by(car: tlsnet.Sidecar) -> set[str]:
    """The SNI of each connection open to `car` (a pooled one stays open after its request)."""
    return {conn.sni for conn in car.runtime.connections}


@pytest.mark.uvloop
@pytest.mark.parametrize(("settings", "sent"), [
    (None, ISTIO_SNI),  # auto mTLS
    (model.UpstreamTls(security.TLS_ISTIO_MUTUAL), ISTIO_SNI),
    (model.UpstreamTls(security.TLS_ISTIO_MUTUAL, sni="books.mesh.example"), "books.mesh.example"),  # DR wins
])
async def test_mesh_tls_sends_istios_sni_unless_the_destination_rule_names_one(ca, tmp_path, settings, sent):
    """The books certificate names no host (a SPIFFE URI only): the 200 also shows the SNI is sent without
    switching host name verification on."""
    net = Mesh()
    try:
        books = await net.books(ca, tmp_path, security.STRICT)
        gw = await net.gw(tlsnet.mesh(ca, tmp_path, "gw"),
                          outbound_view((books_endpoint(books.inbound, identity=spiffe("books")),), settings))
        assert (await call(gw)).status == 200
        assert sni_seen_by(books) == {sent}
    finally:
        await net.close()


@pytest.mark.uvloop
async def test_clusters_with_another_sni_never_share_a_connection(ca, tmp_path):
    """One endpoint in two auto-mTLS clusters (no subset and subset `plain`): each cluster's connections
    carry its own SNI, so each has its pool, reused for its own requests only."""
    net = Mesh()
    try:
        books = await net.books(ca, tmp_path, security.STRICT)
        view = outbound_view((books_endpoint(books.inbound, identity=spiffe("books")),), plain_twin=True)
        view = dataclasses.replace(view, clusters=tuple(dataclasses.replace(c, tls=None) for c in view.clusters))
        gw = await net.gw(tlsnet.mesh(ca, tmp_path, "gw"), view)
        for host in ("books:9080", "plain-books:9080") * 2:
            assert (await call(gw, host=host)).status == 200
        assert sni_seen_by(books) == {ISTIO_SNI, f"outbound_.9080_.plain_.{tlsnet.SERVICE}"}
        assert gw.counter("upstream_cx_tls_handshakes_total") == 2
    finally:
        await net.close()


@pytest.mark.uvloop
async def test_a_certificate_from_another_root_is_refused(ca, tmp_path):
    net = Mesh()
    try:
        books = await net.books(pki.make_ca(), tmp_path, security.STRICT)  # books' chain: another mesh
        gw = await net.gw(tlsnet.mesh(ca, tmp_path, "gw"),
                          outbound_view((books_endpoint(books.inbound, identity=spiffe("books")),),
                                        retries=model.RetryPolicy(attempts=0)))
        answer = await call(gw)
        assert answer.status == 503 and gw.series("source")[0]["response_flags"] == "UF"
        assert gw.counter("upstream_cx_tls_failures_total", reason="handshake") == 1
    finally:
        await net.close()


@pytest.mark.uvloop
async def test_auto_mtls_sends_plaintext_to_an_endpoint_without_mtls(ca, tmp_path):
    net = Mesh()
    try:
        books = await net.books(ca, tmp_path, security.DISABLE)
        gw = await net.gw(tlsnet.mesh(ca, tmp_path, "gw"),
                          outbound_view((books_endpoint(books.inbound, mtls=False, identity=spiffe("books")),)))
        assert (await call(gw)).status == 200
        assert gw.counter("upstream_cx_tls_handshakes_total") == 0
        (dest,) = books.series("destination")
        assert (dest["connection_security_policy"], dest["source_principal"]) == ("none", "unknown")
        (source,) = gw.series("source")
        assert (source["source_principal"], source["destination_principal"]) == ("unknown", "unknown")
    finally:
        await net.close()


@pytest.mark.uvloop
async def test_auto_mtls_waits_for_our_certificate_then_switches_pools(ca, tmp_path):
    net = Mesh()
    try:
        books = await net.books(ca, tmp_path, security.PERMISSIVE)
        gw = await net.gw(None, outbound_view((books_endpoint(books.inbound, identity=spiffe("books")),)))
        assert (await call(gw)).status == 200  # no certificate yet: plaintext, which PERMISSIVE accepts
        gw.runtime.mesh_tls = tlsnet.mesh(ca, tmp_path, "gw")
        assert (await call(gw)).status == 200
        assert sorted(s["connection_security_policy"] for s in books.series("destination")) == ["mutual_tls", "none"]
        assert {s["source_principal"] for s in gw.series("source")} == {"unknown", spiffe("gw")}
    finally:
        await net.close()


@pytest.mark.uvloop
async def test_pools_never_mix_and_a_peer_authentication_change_takes_new_connections(ca, tmp_path):
    """One endpoint, two clusters: DestinationRule DISABLE and auto mTLS. Their connections live in two
    pools; then the endpoint's mtls flips off (PeerAuthentication DISABLE) and the next request is plaintext."""
    net = Mesh()
    try:
        books = await net.books(ca, tmp_path, security.PERMISSIVE)
        endpoint = books_endpoint(books.inbound, identity=spiffe("books"))
        gw = await net.gw(tlsnet.mesh(ca, tmp_path, "gw"), outbound_view((endpoint,), plain_twin=True))
        for host in ("books:9080", "plain-books:9080") * 3:
            assert (await call(gw, host=host)).status == 200
        pools = {key: pool for key, pool in gw.runtime.pools.by_endpoint.items() if key[:2] == ("127.0.0.1", books.inbound)}
        assert len(pools) == 2
        (plain,) = [p for p in pools.values() if p.origin is None]
        (secure,) = [p for p in pools.values() if p.origin is not None]
        assert (plain.origin, plain.opened, plain.reused) == (None, 1, 2)
        assert (secure.origin.mesh, secure.opened, secure.reused) == (True, 1, 2)
        counts = {s["connection_security_policy"]: s["count"] for s in books.series("destination")}
        assert counts == {"none": 3, "mutual_tls": 3}
        flipped = books_endpoint(books.inbound, identity=spiffe("books"), mtls=False)
        await gw.proxy.apply_view(outbound_view((flipped,), plain_twin=True), "v2")
        assert secure.idle == type(secure.idle)(), "the swept mTLS pool keeps no idle connection"
        assert (await call(gw)).status == 200
        counts = {s["connection_security_policy"]: s["count"] for s in books.series("destination")}
        assert counts == {"none": 4, "mutual_tls": 3}
        assert gw.counter("upstream_cx_tls_handshakes_total") == 1
    finally:
        await net.close()


@pytest.mark.uvloop
async def test_certificate_rotation_mid_traffic_fails_no_request(ca, tmp_path):
    net = Mesh()
    try:
        books = await net.books(ca, tmp_path, security.STRICT)
        gw_tls = tlsnet.mesh(ca, tmp_path, "gw")
        view = outbound_view((books_endpoint(books.inbound, identity=spiffe("books")),),
                             pool=model.ConnectionPool(max_requests_per_connection=3),  # new handshakes often
                             retries=model.RetryPolicy(attempts=0))  # a failure must show, not be retried
        gw = await net.gw(gw_tls, view)
        statuses: list[int] = []

        async def client(n: int) -> None:
            for i in range(n):
                statuses.append((await call(gw, f"/c/{i}")).status)

        clients = [asyncio.ensure_future(client(40)) for _ in range(4)]
        await asyncio.sleep(0.05)
        for material, account in ((books.runtime.mesh_tls, "books"), (gw_tls, "gw")):
            chain, key, spiffe_id = pki.workload(ca, tlsnet.NS, account)
            old = material.server
            material.install(chain, key, ca.root_pem, spiffe_id)
            assert material.server is not old and material.installed == 2
            await asyncio.sleep(0.05)
        await asyncio.gather(*clients)
        assert statuses == [200] * 160
        assert gw.counter("upstream_cx_tls_handshakes_total") >= 160 // 3
        assert books.counter("downstream_cx_tls_failures_total", reason="handshake") == 0
    finally:
        await net.close()


def tls_app_context(ca, tmp_path, hosts: list[str], client_roots: bytes | None = None) -> ssl.SSLContext:
    chain, key = ca.issue_server(hosts, now=time.time())
    cert = tlsnet.write_pem(tmp_path, f"{hosts[0]}.pem", chain)
    key_file = tlsnet.write_pem(tmp_path, f"{hosts[0]}.key", key)
    return tls.server_context(cert, key_file, client_roots)


async def external(ca, tmp_path, settings: model.UpstreamTls, client_roots: bytes | None = None):
    """gw's sidecar → (DestinationRule `settings`) → an app serving TLS itself as books.example.com."""
    runner, port = await tlsnet.start_app(tls_app_context(ca, tmp_path, ["books.example.com"], client_roots))
    gw = await tlsnet.sidecar("gw-v1", "gw", None, lambda inbound, outbound: outbound_view(
        (books_endpoint(port, mtls=False),), settings, retries=model.RetryPolicy(attempts=0)))
    return gw, runner


@pytest.mark.uvloop
@pytest.mark.parametrize("sni, sans, status", [
    ("books.example.com", (), 200),
    ("other.example.com", (), 503),  # host name check against the SNI
    ("other.example.com", ("books.example.com",), 200),  # subjectAltNames replace the SNI check
    ("books.example.com", ("spiffe://cluster.local/ns/x/sa/y",), 503),
])
async def test_simple_tls_to_a_server_checked_by_sni_or_subject_alt_names(ca, tmp_path, sni, sans, status):
    roots = tlsnet.write_pem(tmp_path, "root.pem", ca.root_pem)
    gw, runner = await external(ca, tmp_path, model.UpstreamTls(security.TLS_SIMPLE, sni=sni, subject_alt_names=sans,
                                                                ca_file=roots))
    try:
        answer = await call(gw)
        assert answer.status == status
        if status == 200:
            assert answer.json()["client_cert"] == []
            assert gw.counter("upstream_cx_tls_handshakes_total") == 1
        else:
            assert gw.series("source")[0]["response_flags"] == "UF"
    finally:
        await gw.proxy.shutdown()
        await runner.cleanup()


@pytest.mark.uvloop
async def test_simple_with_an_unknown_root_fails_unless_verification_is_skipped(ca, tmp_path):
    other = tlsnet.write_pem(tmp_path, "other.pem", pki.make_ca().root_pem)
    for skip, status in ((False, 503), (True, 200)):
        settings = model.UpstreamTls(security.TLS_SIMPLE, sni="books.example.com", ca_file=other,
                                     insecure_skip_verify=skip)
        gw, runner = await external(ca, tmp_path, settings)
        try:
            assert (await call(gw)).status == status
        finally:
            await gw.proxy.shutdown()
            await runner.cleanup()


@pytest.mark.uvloop
async def test_mutual_tls_presents_the_client_certificate_from_the_cluster_files(ca, tmp_path):
    roots = tlsnet.write_pem(tmp_path, "root.pem", ca.root_pem)
    chain, key, _ = pki.workload(ca, "outside", "client")
    cert_file = tlsnet.write_pem(tmp_path, "client.pem", chain)
    key_file = tlsnet.write_pem(tmp_path, "client.key", key)
    settings = model.UpstreamTls(security.TLS_MUTUAL, sni="books.example.com", ca_file=roots, cert_file=cert_file,
                                 key_file=key_file)
    gw, runner = await external(ca, tmp_path, settings, client_roots=ca.root_pem)
    try:
        answer = await call(gw)
        assert answer.status == 200
        assert answer.json()["client_cert"] == ["spiffe://cluster.local/ns/outside/sa/client"]
    finally:
        await gw.proxy.shutdown()
        await runner.cleanup()


@pytest.mark.uvloop
async def test_a_view_naming_a_missing_certificate_file_is_refused(ca, tmp_path):
    gw = await tlsnet.sidecar("gw-v1", "gw", None, lambda inbound, outbound: outbound_view(
        (books_endpoint(1, mtls=False),)))
    try:
        bad = outbound_view((books_endpoint(1, mtls=False),),
                            model.UpstreamTls(security.TLS_SIMPLE, ca_file=str(tmp_path / "missing.pem")))
        with pytest.raises(model.ViewError, match="missing.pem"):
            await gw.proxy.apply_view(bad, "v2")
        assert gw.runtime.view.version == "v1"
    finally:
        await gw.proxy.shutdown()


def test_decide_follows_destination_rule_and_auto_mtls():
    cluster = model.Cluster(tlsnet.BOOKS)
    sidecar = books_endpoint(9080, identity=spiffe("books"))
    assert origination.decide(cluster, sidecar, mesh_ready=False) is None
    auto = origination.decide(cluster, sidecar, mesh_ready=True)
    assert auto.mesh and auto.expected == (spiffe("books"),)
    assert origination.decide(cluster, books_endpoint(9080, mtls=False), True) is None
    disabled = model.Cluster(tlsnet.BOOKS, tls=model.UpstreamTls(security.TLS_DISABLE))
    assert origination.decide(disabled, sidecar, True) is None
    simple = model.UpstreamTls(security.TLS_SIMPLE, sni="books.example.com")
    origin = origination.decide(model.Cluster(tlsnet.BOOKS, tls=simple), sidecar, True)
    assert (origin.mesh, origin.server_hostname, origin.settings) == (False, "books.example.com", simple)
    assert origination.pool_key(sidecar, None, tlsnet.BOOKS) == ("127.0.0.1", 9080, tlsnet.BOOKS)
    assert origination.pool_key(sidecar, auto, tlsnet.BOOKS) != origination.pool_key(sidecar, origin, tlsnet.BOOKS)
    # Per cluster, as Envoy's pools: plaintext and SIMPLE keys name the cluster; a mesh key's SNI does.
    assert origination.pool_key(sidecar, None, "a") != origination.pool_key(sidecar, None, "b")
    assert origination.pool_key(sidecar, origin, "a") != origination.pool_key(sidecar, origin, "b")


def test_istio_sni_names_the_port_the_subset_and_the_host():
    v1 = model.Cluster(f"outbound|9080|v1|{tlsnet.SERVICE}", service=tlsnet.SERVICE, port=9080, subset="v1")
    whole = model.Cluster(tlsnet.BOOKS, service=tlsnet.SERVICE, port=9080)
    assert origination.istio_sni(v1) == f"outbound_.9080_.v1_.{tlsnet.SERVICE}"
    assert origination.istio_sni(whole) == f"outbound_.9080_._.{tlsnet.SERVICE}"
    sidecar = books_endpoint(9080, identity=spiffe("books"))
    assert origination.decide(v1, sidecar, True).server_hostname == origination.istio_sni(v1)
    assert (origination.pool_key(sidecar, origination.decide(v1, sidecar, True), v1.name)
            != origination.pool_key(sidecar, origination.decide(whole, sidecar, True), whole.name))


@pytest.mark.uvloop
async def test_tls_handshakes_to_a_cold_pool_are_capped_and_waiters_take_freed_connections(ca, tmp_path, monkeypatch):
    monkeypatch.setattr(pool_mod, "MAX_TLS_CONNECTING", 2)
    net = Mesh()
    in_flight = peak = 0
    real_open = origination.Origination.open

    async def counting_open(self, loop, upstream_pool, *args):
        nonlocal in_flight, peak
        if upstream_pool.origin is None:  # the books sidecar's plaintext hop to its app
            return await real_open(self, loop, upstream_pool, *args)
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await real_open(self, loop, upstream_pool, *args)
        finally:
            in_flight -= 1

    monkeypatch.setattr(origination.Origination, "open", counting_open)
    try:
        books = await net.books(ca, tmp_path, security.STRICT)
        gw = await net.gw(tlsnet.mesh(ca, tmp_path, "gw"),
                          outbound_view((books_endpoint(books.inbound, identity=spiffe("books")),)))
        answers = await asyncio.gather(*(call(gw, f"/burst/{i}") for i in range(12)))
        assert [a.status for a in answers] == [200] * 12
        assert peak == 2
        (tls_pool,) = [p for p in gw.runtime.pools.by_endpoint.values() if p.origin is not None]
        assert tls_pool.connecting == 0 and not tls_pool.waiting
        assert gw.counter("upstream_cx_tls_handshakes_total") == tls_pool.opened < 12
    finally:
        await net.close()


@pytest.mark.uvloop
async def test_a_mirror_copy_to_an_mtls_sidecar_goes_over_mtls(ca, tmp_path):
    net = Mesh()
    try:
        books = await net.books(ca, tmp_path, security.STRICT)
        endpoint = books_endpoint(books.inbound, identity=spiffe("books"))
        view = outbound_view((endpoint,), plain_twin=True)
        (table,) = view.route_tables
        mirrored = model.Route("mirrored", clusters=(model.WeightedCluster(tlsnet.PLAIN_BOOKS),),
                               mirrors=(model.Mirror(tlsnet.BOOKS),))
        hosts = (table.virtual_hosts[0], model.VirtualHost("m", ("mirrored",), (mirrored,)))
        view = dataclasses.replace(view, route_tables=(model.RouteTable("9080", hosts),))
        gw = await net.gw(tlsnet.mesh(ca, tmp_path, "gw"), view)
        answer = await call(gw, host="mirrored:9080")
        assert answer.status == 503  # the original goes plaintext (tls DISABLE) to a STRICT sidecar
        for _ in range(50):
            if books.series("destination"):
                break
            await asyncio.sleep(0.02)
        (copy,) = books.series("destination")
        assert copy["connection_security_policy"] == "mutual_tls" and copy["source_principal"] == spiffe("gw")
    finally:
        await net.close()
