"""Test doubles for the data plane: a recording mock transport, a fake connector, a small bookinfo view,
and parsers that turn what a transport received back into requests and responses (httptools, like the
proxy itself, so framing is checked by a real parser)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import httptools

from mesh.proxy import downstream, forwarding, runtime
from mesh.view import model

NS = "bookinfo"


def fqdn(name: str) -> str:
    return f"{name}.{NS}.svc.cluster.local"


BOOKS = f"outbound|9080||{fqdn('books')}"
RATINGS = f"outbound|9080||{fqdn('ratings')}"
REVIEWS = f"outbound|9080||{fqdn('reviews')}"
APP = "inbound|9080||"
BOOKS_V1 = model.Endpoint("10.0.0.11", 9080, "books-v1", NS, "books", "v1")
BOOKS_V2 = model.Endpoint("10.0.0.12", 9080, "books-v2", NS, "books", "v2")
LOCAL_APP = model.Endpoint("127.0.0.1", 9080, "gw-v1", NS, "gw", "v1")
GW = runtime.Identity("gw-v1.bookinfo", "sidecar", NS, "gw-v1", {"app": "gw", "version": "v1"}, "gw")


def names(name: str) -> tuple[str, ...]:
    return (name, f"{name}.{NS}", fqdn(name))


def host(name: str, *routes: model.Route) -> model.VirtualHost:
    return model.VirtualHost(name, names(name), routes)


def to(cluster: str, **route) -> model.Route:
    return model.Route("default", clusters=(model.WeightedCluster(cluster),), **route)


def bookinfo_view(policy: str = "ALLOW_ANY", lb: model.LoadBalancer | None = None,
                  books: tuple[model.Endpoint, ...] = (BOOKS_V1,), books_route: model.Route | None = None
                  ) -> model.ProxyView:
    """gw-v1's sidecar: books (one endpoint), ratings (none), reviews (only `/v1` routed), the local app."""
    only_v1 = model.Route("v1", matches=(model.RouteMatch(uri=model.StringMatch("prefix", "/v1")),),
                          clusters=(model.WeightedCluster(REVIEWS),))
    return model.ProxyView(
        proxy="gw-v1.bookinfo",
        listeners=(model.Listener("virtualInbound", model.INBOUND, 15006, cluster=APP),
                   model.Listener("virtualOutbound", model.OUTBOUND, 15001)),
        route_tables=(model.RouteTable("9080", (
            host("books", books_route or to(BOOKS)), host("ratings", to(RATINGS)), host("reviews", only_v1))),),
        clusters=(model.Cluster(BOOKS, service=fqdn("books"), port=9080, lb=lb or model.LoadBalancer()),
                  model.Cluster(RATINGS, service=fqdn("ratings"), port=9080),
                  model.Cluster(REVIEWS, service=fqdn("reviews"), port=9080),
                  model.Cluster(APP, service=fqdn("gw"), port=9080)),
        endpoints=(model.ClusterEndpoints(BOOKS, books), model.ClusterEndpoints(APP, (LOCAL_APP,))),
        outbound_policy=policy,
    )


class FakeTransport(asyncio.Transport):
    """Records writes and flow-control calls; `close()` only marks it (tests call connection_lost)."""

    def __init__(self, peer: tuple[str, int] = ("10.0.0.99", 40000)) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True
        self.pauses = 0
        self.peer = peer

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    def clear(self) -> None:
        self.writes.clear()

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default=None):
        return {"peername": self.peer}.get(name, default)


@dataclass
class Upstream:
    """One connection the fake connector opened."""

    address: str
    port: int
    protocol: object
    transport: FakeTransport

    def respond(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def reset(self) -> None:
        self.transport.closed = True
        self.protocol.connection_lost(ConnectionResetError())

    def requests(self) -> list[Message]:
        return parse_requests(self.transport.data)


@dataclass
class FakeTimer:
    when: float
    callback: object
    args: tuple
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeNetwork:
    """Stands in for the event loop that `Forwarding` uses: a manual clock and a fake `create_connection`
    whose connections are mock transports. Tasks run on the real (running) loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.now = 1000.0
        self.upstreams: list[Upstream] = []
        self.refused: set[tuple[str, int]] = set()
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback, *args) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback, args)
        self.timers.append(timer)
        return timer

    def call_soon(self, callback, *args):
        return self.loop.call_soon(callback, *args)  # runs at the next settle(), like the real loop

    def advance(self, seconds: float) -> None:
        """Move the fake clock, firing due timers in order (timers they set fire too if due)."""
        deadline = self.now + seconds
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= deadline]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback(*timer.args)
        self.now = deadline

    def create_task(self, coro):
        return self.loop.create_task(coro)

    async def create_connection(self, factory, address: str, port: int):
        if (address, port) in self.refused:
            raise ConnectionRefusedError(111, "Connection refused")
        protocol = factory()
        transport = FakeTransport((address, port))
        protocol.connection_made(transport)
        self.upstreams.append(Upstream(address, port, protocol, transport))
        return transport, protocol


class Proxy:
    """One listener's forwarding over a fake network, and client connections on mock transports."""

    def __init__(self, view: model.ProxyView, direction: str = model.OUTBOUND, table: str | None = None,
                 identity: runtime.Identity = GW, seed: int = 7) -> None:
        self.runtime = runtime.ProxyRuntime(identity, random.Random(seed))
        self.runtime.apply(view, "v1")
        self.net = FakeNetwork()
        self.forwarding = forwarding.Forwarding(self.runtime, direction, table)
        self.forwarding.loop = self.net
        self.runtime.request_clock = self.net.time

    def client(self, peer: tuple[str, int] = ("10.0.0.99", 40000)) -> Client:
        conn = downstream.DownstreamConnection(self.forwarding, 15001, self.runtime.connections)
        transport = FakeTransport(peer)
        conn.connection_made(transport)
        return Client(conn, transport)

    @property
    def upstreams(self) -> list[Upstream]:
        return self.net.upstreams

    def series(self) -> dict[tuple[tuple, int, str], int]:
        return {key: value.count for key, value in self.runtime.stats.series.items()}


async def requested(request: bytes, view: model.ProxyView | None = None) -> tuple[Proxy, Client, Upstream]:
    """(proxy, client, upstream): `request` sent through an outbound listener, its upstream waiting to answer."""
    proxy = Proxy(view or bookinfo_view())
    client = proxy.client()
    client.send(request)
    await settle()
    (upstream,) = proxy.upstreams
    return proxy, client, upstream


@dataclass
class Client:
    conn: downstream.DownstreamConnection
    transport: FakeTransport

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    def responses(self) -> list[Message]:
        return parse_responses(self.transport.data)


async def settle(rounds: int = 10) -> None:
    """Let connect tasks run: yields to the loop, no wall-clock sleep."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@dataclass
class Message:
    first: str = ""  # "GET /path" or "200"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


class _Collector:
    def __init__(self, parser_class, request: bool) -> None:
        self.messages: list[Message] = []
        self.url = b""
        self.request = request
        self.parser = parser_class(self)

    def on_message_begin(self) -> None:
        self.messages.append(Message())
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.messages[-1].headers.append((name.decode().lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.messages[-1].first = (f"{parser.get_method().decode()} {self.url.decode('latin-1')}" if self.request
                                   else str(parser.get_status_code()))

    def on_body(self, body: bytes) -> None:
        self.messages[-1].body += body

    def on_message_complete(self) -> None:
        self.messages[-1].complete = True


def parse_requests(data: bytes) -> list[Message]:
    collector = _Collector(httptools.HttpRequestParser, True)
    collector.parser.feed_data(data)
    return collector.messages


def parse_responses(data: bytes) -> list[Message]:
    collector = _Collector(httptools.HttpResponseParser, False)
    collector.parser.feed_data(data)
    return collector.messages
