"""`ProxyServer` on real loopback sockets (uvloop): bootstrap sidecar end to end, gateway listener binding."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket

import aiohttp
import pytest
from aiohttp import web

from mesh.proxy import runtime, server
from mesh.view import model
from tests.mesh.proxy.fakes import GW, NS, fqdn

MIB = 1024 * 1024
PATTERN = bytes(range(256)) * 256  # 64 KiB


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


async def upload(request: web.Request) -> web.Response:
    digest, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"size": size, "sha256": digest.hexdigest(),
                              "chunked": request.headers.get("transfer-encoding"),
                              "peer": request.headers.get("x-weir-peer")})


async def download(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(MIB // len(PATTERN)):
        await response.write(PATTERN)
    await response.write_eof()
    return response


def sidecar_view(inbound: int, app: int) -> model.ProxyView:
    """books-v1's sidecar calling `books` itself: outbound → (books endpoint = our inbound port) → app."""
    books = f"outbound|9080||{fqdn('books')}"
    local = "inbound|9080||"
    me = model.Endpoint("127.0.0.1", inbound, "books-v1", NS, "books", "v1")
    return model.ProxyView(
        proxy="books-v1.bookinfo",
        listeners=(model.Listener("virtualInbound", model.INBOUND, inbound, cluster=local),
                   model.Listener("virtualOutbound", model.OUTBOUND, 15001)),
        route_tables=(model.RouteTable("9080", (model.VirtualHost("books", ("books",), (
            model.Route("default", clusters=(model.WeightedCluster(books),)),)),)),),
        clusters=(model.Cluster(books, service=fqdn("books"), port=9080), model.Cluster(local, service=fqdn("books"))),
        endpoints=(model.ClusterEndpoints(books, (me,)),
                   model.ClusterEndpoints(local, (model.Endpoint("127.0.0.1", app, "books-v1", NS, "books", "v1"),))),
    )


async def body_stream():
    for _ in range(MIB // len(PATTERN)):
        yield PATTERN


@pytest.mark.uvloop
async def test_bootstrap_sidecar_streams_a_mib_both_ways_through_outbound_and_inbound():
    app = web.Application()
    app.router.add_post("/upload", upload)
    app.router.add_get("/download", download)
    runner = web.AppRunner(app)
    await runner.setup()
    app_port, inbound, outbound, admin_port = free_ports(4)
    await web.TCPSite(runner, "127.0.0.1", app_port).start()
    identity = runtime.Identity("books-v1.bookinfo", "sidecar", NS, "books-v1", {"app": "books", "version": "v1"})
    proxy = server.ProxyServer(runtime.ProxyRuntime(identity, random.Random(1)), bind="127.0.0.1",
                               inbound_port=inbound, outbound_port=outbound)
    await proxy.start(admin_port, None, {}, bootstrap=sidecar_view(inbound, app_port))
    try:
        async with aiohttp.ClientSession() as session:
            via = f"http://127.0.0.1:{outbound}"
            async with session.post("http://books:9080/upload", data=body_stream(), proxy=via) as resp:
                assert resp.status == 200
                got = await resp.json()
            assert got == {"size": MIB, "sha256": hashlib.sha256(PATTERN * 16).hexdigest(), "chunked": "chunked",
                           "peer": None}
            async with session.get("http://books:9080/download", proxy=via) as resp:
                assert resp.status == 200 and resp.headers["transfer-encoding"] == "chunked"
                assert await resp.read() == PATTERN * 16
            async with session.get(f"http://127.0.0.1:{admin_port}/ready") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{admin_port}/stats/prometheus") as resp:
                text = await resp.text()
        assert text.count('reporter="source",source_workload="books-v1"') >= 2
        assert 'reporter="destination",source_workload="books-v1"' in text  # peer header crossed the hop
    finally:
        await proxy.shutdown()
        await runner.cleanup()
    assert proxy.runtime.connections == set()


def gateway_view(*listeners: tuple[int, str]) -> model.ProxyView:
    return model.ProxyView(
        proxy="istio-ingressgateway.weir-system",
        listeners=tuple(model.Listener(f"http.{port}", model.GATEWAY, port, route_table=table)
                        for port, table in listeners),
        route_tables=tuple(model.RouteTable(table, ()) for _, table in listeners),
    )


@pytest.mark.uvloop
async def test_gateway_bind_failure_is_a_view_error_and_keeps_the_previous_view():
    first, second = free_ports(2)
    identity = runtime.Identity("gw", "gateway", "weir-system", "istio-ingressgateway")
    proxy = server.ProxyServer(runtime.ProxyRuntime(identity, random.Random(1)), bind="127.0.0.1",
                               port_map={80: first, 81: second})
    await proxy.apply_view(gateway_view((80, "http.80")), "v1")
    assert sorted(proxy.servers) == [first]
    taken = socket.socket()
    taken.bind(("127.0.0.1", second))
    taken.listen()
    try:
        with pytest.raises(model.ViewError, match=f"127.0.0.1:{second}"):
            await proxy.apply_view(gateway_view((80, "http.80.new"), (81, "http.81")), "v2")
        assert proxy.runtime.view.version == "v1"
        assert sorted(proxy.servers) == [first]
        assert proxy.servers[first][1].table == "http.80", "the kept view's listener still routes by its table"
        reader, writer = await asyncio.open_connection("127.0.0.1", first)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 404")
        writer.close()
    finally:
        taken.close()
    await proxy.apply_view(gateway_view((81, "http.81")), "v3")
    assert sorted(proxy.servers) == [second] and proxy.runtime.view.version == "v3"
    await proxy.shutdown()


@pytest.mark.uvloop
async def test_sidecar_rejects_a_view_with_dangling_references_before_binding():
    proxy = server.ProxyServer(runtime.ProxyRuntime(GW, random.Random(1)), bind="127.0.0.1",
                               inbound_port=free_ports(1)[0], outbound_port=free_ports(1)[0])
    bad = model.ProxyView(proxy="p", listeners=(model.Listener("in", model.INBOUND, 1, cluster="nope"),))
    with pytest.raises(model.ViewError):
        await proxy.apply_view(bad, "v1")
    assert proxy.servers == {} and proxy.runtime.view is None and not proxy.admin.ready


@pytest.mark.uvloop
async def test_a_view_with_a_regex_python_cannot_compile_is_a_view_error_and_binds_nothing():
    first, second = free_ports(2)
    identity = runtime.Identity("gw", "gateway", "weir-system", "istio-ingressgateway")
    proxy = server.ProxyServer(runtime.ProxyRuntime(identity, random.Random(1)), bind="127.0.0.1",
                               port_map={80: first, 81: second})
    await proxy.apply_view(gateway_view((80, "http.80")), "v1")
    bad_match = model.RouteMatch(uri=model.StringMatch("regex", "/books/(?P<id"))
    bad = gateway_view((80, "http.80"), (81, "http.81"))
    bad = model.ProxyView(proxy=bad.proxy, listeners=bad.listeners, route_tables=(
        bad.route_tables[0], model.RouteTable("http.81", (model.VirtualHost("h", ("*",), (
            model.Route("r", (bad_match,), direct_response=model.DirectResponse(200)),)),))))
    with pytest.raises(model.ViewError, match="invalid regex"):
        await proxy.apply_view(bad, "v2")
    assert sorted(proxy.servers) == [first] and proxy.runtime.view.version == "v1"
    await proxy.shutdown()
