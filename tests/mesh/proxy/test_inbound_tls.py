"""The sidecar inbound accept path on loopback: PeerAuthentication STRICT / PERMISSIVE / DISABLE per
connection, the certificate it presents, identities it reports, and the bounds on slow clients."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from mesh.proxy import inbound_tls, stats
from mesh.view import security
from tests.mesh.proxy import tlsnet
from tests.mesh.proxy.tlsnet import client_context, http, inbound_view, refused, spiffe


async def books_sidecar(ca, tmp_path, mode: str, *, certified: bool = True, port_modes=()):
    runner, app_port = await tlsnet.start_app()
    material = tlsnet.mesh(ca, tmp_path, "books") if certified else None
    car = await tlsnet.sidecar("books-v1", "books", material,
                               lambda inbound, _: inbound_view(inbound, app_port, mode, port_modes))
    return car, runner


async def stop(car, runner) -> None:
    await car.proxy.shutdown()
    await runner.cleanup()


@pytest.mark.uvloop
async def test_strict_refuses_plaintext_at_the_handshake_and_serves_mesh_clients(ca, tmp_path):
    car, runner = await books_sidecar(ca, tmp_path, security.STRICT)
    gw = tlsnet.mesh(ca, tmp_path, "gw")
    try:
        assert await refused(car.inbound)
        assert car.counter("downstream_cx_tls_failures_total", reason="plaintext") == 1
        answer = await http(car.inbound, "/books", ctx=client_context(gw, ca.root_pem))
        assert answer.status == 200 and answer.json()["path"] == "/books"
        (series,) = car.series("destination")
        assert series["connection_security_policy"] == "mutual_tls"
        assert series["source_principal"] == spiffe("gw") and series["destination_principal"] == spiffe("books")
        assert car.counter("downstream_cx_tls_handshakes_total") == 1
    finally:
        await stop(car, runner)


@pytest.mark.uvloop
async def test_strict_server_presents_its_spiffe_id_and_requires_a_client_certificate(ca, tmp_path):
    """Seen from outside with Python's ssl: the chain verifies to the mesh root, the URI SAN is books'
    SPIFFE ID, and without a client certificate no request is answered."""
    car, runner = await books_sidecar(ca, tmp_path, security.STRICT)
    try:
        ctx = client_context(None, ca.root_pem)
        reader, writer = await asyncio.open_connection("127.0.0.1", car.inbound, ssl=ctx, server_hostname="")
        assert ("URI", spiffe("books")) in writer.get_extra_info("peercert")["subjectAltName"]
        writer.write(b"GET / HTTP/1.1\r\nHost: books\r\n\r\n")
        with pytest.raises((ssl.SSLError, ConnectionError)):  # TLS 1.3: the server's alert comes after
            if not await asyncio.wait_for(reader.read(100), 5):
                raise ConnectionResetError("closed")
        writer.close()
        await asyncio.sleep(0.05)
        assert car.counter("downstream_cx_tls_failures_total", reason="handshake") == 1
        assert car.series("destination") == []
    finally:
        await stop(car, runner)


@pytest.mark.uvloop
async def test_permissive_serves_mtls_and_plaintext_on_one_port(ca, tmp_path):
    car, runner = await books_sidecar(ca, tmp_path, security.PERMISSIVE)
    gw = tlsnet.mesh(ca, tmp_path, "gw")
    try:
        assert (await http(car.inbound, "/plain")).status == 200
        assert (await http(car.inbound, "/mtls", ctx=client_context(gw, ca.root_pem))).status == 200
        policies = {s["connection_security_policy"]: (s["source_principal"], s["destination_principal"])
                    for s in car.series("destination")}
        assert policies == {"none": ("unknown", "unknown"), "mutual_tls": (spiffe("gw"), spiffe("books"))}
        assert car.counter("downstream_cx_tls_handshakes_total") == 1
    finally:
        await stop(car, runner)


@pytest.mark.uvloop
async def test_connection_metrics_name_the_client_certificate(ca, tmp_path):
    """istio_tcp_connections_*: the principal a connection's handshake verified, counted as it opens."""
    car, runner = await books_sidecar(ca, tmp_path, security.PERMISSIVE)
    gw = tlsnet.mesh(ca, tmp_path, "gw")
    try:
        assert (await http(car.inbound, "/plain")).status == 200
        assert (await http(car.inbound, "/mtls", ctx=client_context(gw, ca.root_pem))).status == 200
        opened = [dict(zip(stats.PEER_LABELS, peer)) for peer in car.runtime.tcp.opened]
        seen = {(s["connection_security_policy"], s["source_principal"], s["destination_principal"],
                 s["source_workload"], s["destination_workload"]) for s in opened}
        assert seen == {("none", "unknown", "unknown", "unknown", "books-v1"),
                        ("mutual_tls", spiffe("gw"), spiffe("books"), "unknown", "books-v1")}
    finally:
        await stop(car, runner)


@pytest.mark.uvloop
@pytest.mark.parametrize(("secure", "sent", "seen"), [
    (True, f"outbound_.9080_._.{tlsnet.SERVICE}", f"outbound_.9080_._.{tlsnet.SERVICE}"),
    (True, "", ""),  # TLS without SNI
    (False, None, ""),  # plaintext
])
async def test_the_connection_carries_the_sni_the_client_sent(ca, tmp_path, secure, sent, seen):
    """What AuthorizationPolicy's `connection.sni` compares, set once per connection at the handshake."""
    car, runner = await books_sidecar(ca, tmp_path, security.PERMISSIVE)
    ctx = client_context(tlsnet.mesh(ca, tmp_path, "gw"), ca.root_pem) if secure else None
    try:
        async with tlsnet.kept_open(car.inbound, ctx=ctx, sni=sent) as held:
            assert held.status == 200
            conn = held.accepted_by(car.runtime)
            assert (conn.secure, conn.sni) == (secure, seen)
    finally:
        await stop(car, runner)


@pytest.mark.uvloop
async def test_disable_serves_plaintext_only(ca, tmp_path):
    car, runner = await books_sidecar(ca, tmp_path, security.DISABLE)
    gw = tlsnet.mesh(ca, tmp_path, "gw")
    try:
        assert (await http(car.inbound)).status == 200
        assert await refused(car.inbound, ctx=client_context(gw, ca.root_pem))  # a ClientHello is not HTTP
        assert car.counter("downstream_cx_tls_handshakes_total") == 0
    finally:
        await stop(car, runner)


@pytest.mark.uvloop
async def test_without_a_certificate_permissive_is_plaintext_and_strict_refuses_everything(ca, tmp_path):
    car, runner = await books_sidecar(ca, tmp_path, security.PERMISSIVE, certified=False)
    gw = client_context(tlsnet.mesh(ca, tmp_path, "gw"), ca.root_pem)
    try:
        assert (await http(car.inbound)).status == 200
        assert await refused(car.inbound, ctx=gw)
        app_port = car.runtime.view.inbound_cluster.balancer.endpoints[0].port
        await car.proxy.apply_view(inbound_view(car.inbound, app_port, security.STRICT), "v2")
        assert await refused(car.inbound) and await refused(car.inbound, ctx=gw)
        assert car.counter("downstream_cx_tls_failures_total", reason="no_certificate") == 2
        car.runtime.mesh_tls = tlsnet.mesh(ca, tmp_path, "books")  # the certificate arrives
        assert (await http(car.inbound, ctx=gw)).status == 200
    finally:
        await stop(car, runner)


@pytest.mark.uvloop
async def test_a_peer_authentication_change_applies_to_new_connections_without_rebinding(ca, tmp_path):
    car, runner = await books_sidecar(ca, tmp_path, security.PERMISSIVE)
    listener = car.proxy.servers[car.inbound][0]
    app_port = car.runtime.view.inbound_cluster.balancer.endpoints[0].port
    port = car.runtime.view.inbound_cluster.spec.port  # the workload port (targetPort), not where it listens
    assert port == 9080 != app_port
    try:
        assert (await http(car.inbound)).status == 200
        # portLevelMtls names the workload's port: STRICT there, whatever the workload-wide mode says
        await car.proxy.apply_view(inbound_view(car.inbound, app_port, security.PERMISSIVE,
                                                ((port, security.STRICT),)), "v2")
        assert car.proxy.servers[car.inbound][0] is listener
        assert await refused(car.inbound)
        await car.proxy.apply_view(inbound_view(car.inbound, app_port, security.STRICT,
                                                ((port + 1, security.DISABLE),)), "v3")
        assert await refused(car.inbound)
        await car.proxy.apply_view(inbound_view(car.inbound, app_port, security.STRICT,
                                                ((port, security.DISABLE),)), "v4")
        assert (await http(car.inbound)).status == 200
    finally:
        await stop(car, runner)


@pytest.mark.uvloop
async def test_slow_tls_clients_are_cut_and_never_hold_the_accept_path(ca, tmp_path, monkeypatch):
    monkeypatch.setattr(inbound_tls, "HANDSHAKE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(inbound_tls, "FIRST_BYTE_TIMEOUT_S", 0.3)
    car, runner = await books_sidecar(ca, tmp_path, security.STRICT)
    gw = client_context(tlsnet.mesh(ca, tmp_path, "gw"), ca.root_pem)
    loop = asyncio.get_running_loop()
    slow = []
    try:
        for i in range(6):  # half start a TLS record and stall, half never send a byte
            sock = socket.create_connection(("127.0.0.1", car.inbound))
            sock.setblocking(False)
            if i % 2 == 0:
                sock.send(b"\x16\x03\x01\x02")
            slow.append(sock)
        started = loop.time()
        assert (await http(car.inbound, ctx=gw)).status == 200
        assert loop.time() - started < 0.25, "a mesh client waited behind stalled handshakes"
        await asyncio.sleep(0.6)
        for sock in slow:
            assert await asyncio.wait_for(loop.sock_recv(sock, 10), 1) == b""  # closed by the proxy
        assert car.counter("downstream_cx_tls_failures_total", reason="handshake") == 3
        assert car.counter("downstream_cx_tls_failures_total", reason="timeout") == 3
        assert car.proxy.servers[car.inbound][0].pending == set()
    finally:
        for sock in slow:
            sock.close()
        await stop(car, runner)


@pytest.mark.uvloop
async def test_at_the_pending_bound_accepting_pauses_and_resumes(ca, tmp_path, monkeypatch):
    monkeypatch.setattr(inbound_tls, "MAX_PENDING", 2)
    monkeypatch.setattr(inbound_tls, "FIRST_BYTE_TIMEOUT_S", 0.3)
    car, runner = await books_sidecar(ca, tmp_path, security.PERMISSIVE)
    listener = car.proxy.servers[car.inbound][0]
    idle = [socket.create_connection(("127.0.0.1", car.inbound)) for _ in range(2)]
    try:
        await asyncio.sleep(0.05)
        assert len(listener.pending) == 2
        request = asyncio.ensure_future(http(car.inbound))
        await asyncio.sleep(0.1)
        assert not listener.accepting and not request.done(), "the third connection waits in the backlog"
        assert (await request).status == 200  # idle ones time out to plaintext; accepting resumes
        assert listener.accepting
    finally:
        for sock in idle:
            sock.close()
        await stop(car, runner)
