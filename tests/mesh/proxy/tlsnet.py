"""Loopback fixtures for the TLS tests: identities from a test CA, an app, sidecars and gateways bound to
real sockets, and a raw HTTP/1.1 client that can speak TLS with a chosen certificate and SNI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from mesh.proxy import runtime, server, tls
from mesh.view import model, security
from tests import pki

NS = "bookinfo"
SERVICE = f"books.{NS}.svc.cluster.local"
BOOKS = f"outbound|9080||{SERVICE}"
PLAIN_BOOKS = f"outbound|9080|plain|{SERVICE}"
LOCAL = "inbound|9080||"


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def spiffe(account: str) -> str:
    return security.spiffe_id(NS, account)


def client_context(material: tls.MeshTls | None, roots: bytes) -> ssl.SSLContext:
    """What another sidecar's outbound side uses: the mesh roots and, when given, a workload certificate."""
    if material is None:
        return tls.client_context(roots)
    return tls.client_context(roots, material.cert_file, material.key_file)


# -- the app behind a sidecar -----------------------------------------------------------------------------
async def _echo(request: web.Request) -> web.Response:
    peercert = request.transport.get_extra_info("peercert") if request.transport else None
    return web.json_response({"path": request.path_qs, "peer": request.headers.get("x-weir-peer"),
                              "client_cert": [v for _, v in (peercert or {}).get("subjectAltName", ())]})


async def start_app(ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    (port,) = free_ports(1)
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    return runner, port


# -- views ------------------------------------------------------------------------------------------------
def inbound_view(inbound_port: int, app_port: int, mode: str = security.PERMISSIVE,
                 port_modes: tuple[tuple[int, str], ...] = ()) -> model.ProxyView:
    """books-v1's sidecar: the inbound listener in front of the app, under PeerAuthentication `mode`."""
    app = model.Endpoint("127.0.0.1", app_port, "books-v1", NS, "books", "v1")
    return model.ProxyView(
        proxy="books-v1.bookinfo",
        listeners=(model.Listener("virtualInbound", model.INBOUND, inbound_port, cluster=LOCAL),),
        clusters=(model.Cluster(LOCAL, service=SERVICE, port=9080),),
        endpoints=(model.ClusterEndpoints(LOCAL, (app,)),),
        security=model.Security(mtls=model.InboundMtls(mode, port_modes)),
    )


def books_endpoint(port: int, *, mtls: bool = True, identity: str = "", workload: str = "books-v1",
                   address: str = "127.0.0.1") -> model.Endpoint:
    return model.Endpoint(address, port, workload, NS, "books", "v1", identity=identity, mtls=mtls)


def outbound_view(endpoints: tuple[model.Endpoint, ...], tls_settings: model.UpstreamTls | None = None,
                  plain_twin: bool = False, pool: model.ConnectionPool = model.DEFAULT_CONNECTION_POOL,
                  retries: model.RetryPolicy = model.DEFAULT_RETRIES) -> model.ProxyView:
    """gw-v1's sidecar: host `books` → BOOKS (auto mTLS unless `tls_settings`); with `plain_twin`, host
    `plain-books` → the same endpoints under DestinationRule tls DISABLE."""
    hosts = [model.VirtualHost("books", ("books",), (
        model.Route("default", clusters=(model.WeightedCluster(BOOKS),), retries=retries),))]
    clusters = [model.Cluster(BOOKS, service=SERVICE, port=9080, tls=tls_settings, pool=pool)]
    assignments = [model.ClusterEndpoints(BOOKS, endpoints)]
    if plain_twin:
        hosts.append(model.VirtualHost("plain-books", ("plain-books",), (
            model.Route("plain", clusters=(model.WeightedCluster(PLAIN_BOOKS),)),)))
        clusters.append(model.Cluster(PLAIN_BOOKS, service=SERVICE, port=9080, subset="plain",
                                      tls=model.UpstreamTls(security.TLS_DISABLE)))
        assignments.append(model.ClusterEndpoints(PLAIN_BOOKS, endpoints))
    return model.ProxyView(
        proxy="gw-v1.bookinfo",
        listeners=(model.Listener("virtualOutbound", model.OUTBOUND, 15001),),
        route_tables=(model.RouteTable("9080", tuple(hosts)),),
        clusters=tuple(clusters),
        endpoints=tuple(assignments),
    )


def gateway_view(port: int, servers: tuple[model.ServerTls, ...] = (), https_redirect: bool = False) -> model.ProxyView:
    table = f"http.{port}"
    route = model.Route("ok", direct_response=model.DirectResponse(200, "gateway ok"))
    return model.ProxyView(
        proxy="istio-ingressgateway.weir-system",
        listeners=(model.Listener(f"gateway.{port}", model.GATEWAY, port, route_table=table, tls=servers,
                                  https_redirect=https_redirect),),
        route_tables=(model.RouteTable(table, (model.VirtualHost("all", ("*",), (route,)),)),),
    )


# -- proxies ----------------------------------------------------------------------------------------------
@dataclass
class Sidecar:
    proxy: server.ProxyServer
    inbound: int
    outbound: int

    @property
    def runtime(self) -> runtime.ProxyRuntime:
        return self.proxy.runtime

    def counter(self, name: str, **labels: str) -> float:
        return self.runtime.counters.get(name, **labels)

    def series(self, reporter: str) -> list[dict]:
        from mesh.proxy import stats

        names = stats.PEER_LABELS + stats.RESPONSE_LABELS
        return [dict(zip(names, (*peer, code, flags)), count=s.count)
                for (peer, code, flags), s in self.runtime.stats.series.items() if peer[0] == reporter]


async def sidecar(workload: str, account: str, material: tls.MeshTls | None,
                  view_for=None, role: str = "sidecar", port_map: dict[int, int] | None = None) -> Sidecar:
    """A proxy bound on loopback; `view_for(inbound_port, outbound_port)` builds its view."""
    inbound, outbound = free_ports(2)
    app = workload.rsplit("-", 1)[0]
    ident = runtime.Identity(f"{workload}.{NS}", role, NS, workload, {"app": app, "version": "v1"}, account)
    rt = runtime.ProxyRuntime(ident, random.Random(3))
    rt.mesh_tls = material
    proxy = server.ProxyServer(rt, bind="127.0.0.1", inbound_port=inbound, outbound_port=outbound,
                               port_map=port_map)
    await proxy.apply_view(view_for(inbound, outbound), "v1")
    return Sidecar(proxy, inbound, outbound)


# -- a raw HTTP/1.1 client ------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    peercert: dict | None = None
    version: str = ""  # the TLS protocol version negotiated ("" in plaintext)

    def json(self) -> dict:
        return json.loads(self.body)


async def http(port: int, path: str = "/", *, host: str = "books:9080", ctx: ssl.SSLContext | None = None,
               sni: str | None = "", proxy: bool = False, timeout: float = 5.0) -> Answer:
    """One request on a new connection (Connection: close). `proxy`: absolute form, as an app sends to its
    sidecar's outbound listener. Raises when the connection is refused or closed without an answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=sni if ctx is not None else None), timeout)
    try:
        target = f"http://{host}{path}" if proxy else path
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(-1), timeout)
        peercert = writer.get_extra_info("peercert")
        ssl_object = writer.get_extra_info("ssl_object")
        version = ssl_object.version() if ssl_object is not None else ""
    finally:
        writer.close()
    if not raw:
        raise ConnectionResetError("closed without an answer")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body, peercert, version)


@dataclass
class Held:
    status: int
    local: tuple  # the client's end: (address, port)

    def accepted_by(self, rt: runtime.ProxyRuntime):
        """The proxy's side of this connection (a `mesh.proxy.downstream.DownstreamConnection`)."""
        (conn,) = [c for c in rt.connections if c.transport.get_extra_info("peername")[:2] == self.local[:2]]
        return conn


@contextlib.asynccontextmanager
async def kept_open(port: int, *, host: str = "books:9080", ctx: ssl.SSLContext | None = None,
                    sni: str = "", timeout: float = 5.0):
    """A connection that made one keep-alive request and read its answer's head, held open while the block
    runs, so the proxy's side of it can be looked at (`Held.accepted_by`)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=sni if ctx is not None else None), timeout)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        yield Held(int(head.split()[1]), writer.get_extra_info("sockname"))
    finally:
        writer.close()


async def refused(port: int, **kwargs) -> bool:
    """True when a request on a new connection gets no HTTP answer (closed, reset or TLS failure)."""
    try:
        await http(port, **kwargs)
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
        return True
    return False


def write_pem(directory: Path, name: str, data: bytes) -> str:
    path = directory / name
    path.write_bytes(data)
    return str(path)


def mesh(ca, directory: Path, account: str) -> tls.MeshTls:
    return pki.mesh_tls(ca, directory / account, NS, account)
