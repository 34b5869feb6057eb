"""`--inbound-bind` and `--health-port`: in a pod, inbound listeners and the kubelet's readiness endpoint
listen on the pod IP while the outbound listener and the admin stay on loopback."""

from __future__ import annotations

import asyncio
import random

from mesh.proxy import __main__ as proxy_main
from mesh.proxy import runtime, server
from mesh.view import model
from tests.mesh.proxy.fakes import GW
from tests.mesh.proxy.test_server import free_ports

INBOUND_HOST = "127.0.0.2"  # stands for the pod IP: any loopback address other than --bind


def sidecar(inbound: int, outbound: int) -> server.ProxyServer:
    return server.ProxyServer(runtime.ProxyRuntime(GW, random.Random(1)), bind="127.0.0.1",
                              inbound_port=inbound, outbound_port=outbound, inbound_bind=INBOUND_HOST)


def view(inbound: int, outbound: int) -> model.ProxyView:
    return model.ProxyView(proxy="gw-v1.bookinfo", listeners=(
        model.Listener("virtualInbound", model.INBOUND, inbound, cluster="inbound|9080||"),
        model.Listener("virtualOutbound", model.OUTBOUND, outbound)),
        clusters=(model.Cluster("inbound|9080||", service="gw.bookinfo.svc.cluster.local"),))


async def get(host: str, port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n", 1)[0]


def test_health_dispatch_serves_only_the_ready_latch_and_the_metrics():
    proxy = sidecar(0, 0)
    assert proxy.admin.dispatch_health("GET", "/healthz/ready")[0] == 503
    proxy.admin.ready = True
    assert proxy.admin.dispatch_health("GET", "/healthz/ready")[:1] == (200,)
    status, content_type, body = proxy.admin.dispatch_health("GET", "/stats/prometheus")
    assert (status, content_type) == (200, "text/plain; version=0.0.4")
    assert b"# TYPE istio_requests_total counter" in body
    for method, path in (("GET", "/ready"), ("GET", "/config_dump"), ("GET", "/stats"),
                         ("POST", "/quitquitquit"), ("POST", "/healthz/ready"), ("POST", "/stats/prometheus")):
        assert proxy.admin.dispatch_health(method, path)[0] == 404, (method, path)


async def test_inbound_and_health_on_inbound_bind_outbound_and_admin_on_loopback():
    inbound, outbound, admin, health = free_ports(4)
    proxy = sidecar(inbound, outbound)
    await proxy.start(admin, None, {}, health_port=health)
    try:
        assert await get(INBOUND_HOST, health, "/healthz/ready") == b"HTTP/1.1 503 Service Unavailable"
        await proxy.apply_view(view(inbound, outbound), "v1")
        assert await get(INBOUND_HOST, health, "/healthz/ready") == b"HTTP/1.1 200 OK"
        assert await get(INBOUND_HOST, health, "/config_dump") == b"HTTP/1.1 404 Not Found"
        assert await get(INBOUND_HOST, health, "/stats/prometheus") == b"HTTP/1.1 200 OK"
        assert await get("127.0.0.1", admin, "/ready") == b"HTTP/1.1 200 OK"
        assert proxy.servers[inbound][0].sock.getsockname()[0] == INBOUND_HOST
        assert proxy.servers[outbound][0].sockets[0].getsockname()[0] == "127.0.0.1"
    finally:
        await proxy.shutdown()


def test_flags_default_to_loopback_and_no_health_port():
    base = ["--id", "x.ns", "--workload", "x", "--bootstrap", "view.json"]
    args = proxy_main.parse_args(base)
    assert (args.bind, args.inbound_bind, args.health_port) == ("127.0.0.1", None, None)
    args = proxy_main.parse_args([*base, "--inbound-bind", "0.0.0.0", "--health-port", "15021"])
    assert (args.bind, args.inbound_bind, args.health_port) == ("127.0.0.1", "0.0.0.0", 15021)
