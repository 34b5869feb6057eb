"""Graceful drain (mesh.proxy.drain, DownstreamConnection.drain, ProxyServer.shutdown) over mock transports
and a fake clock: what a client sees on each kind of connection, and the drain counters."""

from __future__ import annotations

import asyncio

from mesh.proxy import drain, server
from tests.mesh.proxy.fakes import Proxy, bookinfo_view, settle

GET_BOOKS = b"GET /books HTTP/1.1\r\nHost: books:9080\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class FakeTime:
    """A clock and a sleep that advances it; `at[t]` runs when the clock reaches t (an upstream answering)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.at: dict[float, object] = {}

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now = round(self.now + seconds, 6)
        for when in sorted(t for t in self.at if t <= self.now):
            self.at.pop(when)()
        await settle()


def counts(proxy: Proxy) -> dict[str, float]:
    return {state: proxy.runtime.counters.get(drain.COUNTER, state=state)
            for state in (drain.IDLE, drain.FINISHED, drain.FORCED)}


async def test_an_idle_keep_alive_connection_is_closed_at_once():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(OK)
    assert not client.transport.closed
    time = FakeTime()
    result = await drain.drain(proxy.runtime.connections, proxy.runtime.counters, clock=time.clock, sleep=time.sleep)
    assert client.transport.closed
    assert repr(result) == "<Drain idle=1 finished=0 forced=0 in 0.00s>"
    assert counts(proxy) == {"idle": 1, "finished": 0, "forced": 0}


async def test_an_in_flight_request_finishes_with_connection_close_then_the_connection_closes():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    (up,) = proxy.upstreams
    time = FakeTime()
    time.at[1.0] = lambda: up.respond(OK)
    result = await drain.drain(proxy.runtime.connections, proxy.runtime.counters, clock=time.clock, sleep=time.sleep)
    (response,) = client.responses()
    assert (response.first, response.body, response.header("connection")) == ("200", b"ok", "close")
    assert client.transport.closed
    assert (result.idle, result.finished, result.forced) == (0, 1, 0)
    assert 1.0 <= result.seconds < 1.1
    assert counts(proxy) == {"idle": 0, "finished": 1, "forced": 0}


async def test_a_response_already_streaming_completes_and_the_connection_closes_after_it():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    (up,) = proxy.upstreams
    up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nok")  # head and half the body sent
    time = FakeTime()
    time.at[0.5] = lambda: up.respond(b"ok")
    result = await drain.drain(proxy.runtime.connections, proxy.runtime.counters, clock=time.clock, sleep=time.sleep)
    (response,) = client.responses()
    assert (response.first, response.body, response.complete) == ("200", b"okok", True)
    assert client.transport.closed and result.finished == 1


async def test_a_pipelined_request_accepted_before_the_drain_is_served_and_the_last_answer_says_close():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS + GET_BOOKS)
    await settle()
    (up,) = proxy.upstreams
    time = FakeTime()
    time.at[0.2] = lambda: up.respond(OK)
    time.at[0.4] = lambda: up.respond(OK)
    result = await drain.drain(proxy.runtime.connections, proxy.runtime.counters, clock=time.clock, sleep=time.sleep)
    assert [(r.first, r.header("connection")) for r in client.responses()] == [("200", None), ("200", "close")]
    assert client.transport.closed and result.finished == 1


async def test_a_request_arriving_on_a_draining_connection_is_answered_with_connection_close():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    (up,) = proxy.upstreams
    up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nok")  # streaming: the head had no close
    closed_now, busy = drain.start(proxy.runtime.connections)
    assert (closed_now, busy) == (0, [client.conn])
    client.send(GET_BOOKS)  # pipelined while draining
    up.respond(b"ok")
    await settle()
    up.respond(OK)
    assert [(r.first, r.header("connection")) for r in client.responses()] == [("200", None), ("200", "close")]
    assert client.transport.closed


async def test_what_is_still_in_flight_at_the_deadline_is_closed_and_counted_forced():
    proxy = Proxy(bookinfo_view())
    slow, idle = proxy.client(), proxy.client(("10.0.0.98", 40001))
    slow.send(GET_BOOKS)
    await settle()
    time = FakeTime()
    result = await drain.drain(proxy.runtime.connections, proxy.runtime.counters, timeout=2.0,
                               clock=time.clock, sleep=time.sleep)
    assert slow.transport.closed and idle.transport.closed
    assert slow.responses() == []
    assert (result.idle, result.finished, result.forced) == (1, 0, 1)
    assert 2.0 <= result.seconds < 2.1
    assert counts(proxy) == {"idle": 1, "finished": 0, "forced": 1}


class FakeListener:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def close(self) -> None:
        self.events.append("listener closed")


async def test_shutdown_is_a_sequence_not_ready_stop_accepting_drain_close_pools():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    (up,) = proxy.upstreams
    srv = server.ProxyServer(proxy.runtime, bind="127.0.0.1", drain_timeout=3.0)
    srv.admin.ready = True
    events: list[str] = []
    srv.servers = {15001: (FakeListener(events), proxy.forwarding)}
    task = asyncio.create_task(srv.shutdown())
    await asyncio.sleep(0.01)
    assert srv.admin.dispatch("GET", "/ready") == (503, "text/plain", b"DRAINING\n")
    assert events == ["listener closed"]
    assert not client.transport.closed, "the in-flight request is still being served"
    up.respond(OK)  # the upstream connection goes back to the pool, idle
    await asyncio.wait_for(task, 1.0)
    assert up.transport.closed, "the pools are closed last"
    assert srv.stopped.is_set() and srv.exit_code == 0
    assert client.responses()[0].header("connection") == "close"
    assert repr(srv.drained).startswith("<Drain idle=0 finished=1 forced=0")
    await srv.shutdown()  # a second SIGTERM while stopping changes nothing
    assert events == ["listener closed"]


def test_the_drain_timeout_flag_defaults_to_istios_termination_drain_duration():
    from mesh.proxy import __main__ as main

    base = ["--id", "x", "--workload", "x", "--bootstrap", "view.json"]
    assert main.parse_args(base).drain_timeout == drain.DRAIN_TIMEOUT_S == 5.0
    assert main.parse_args([*base, "--drain-timeout", "0.5"]).drain_timeout == 0.5


async def test_a_view_arriving_while_draining_replaces_the_routing_but_binds_nothing():
    proxy = Proxy(bookinfo_view())
    srv = server.ProxyServer(proxy.runtime, bind="127.0.0.1", inbound_port=15006, outbound_port=15001)
    await srv.shutdown()
    await srv.apply_view(bookinfo_view(books=()), "v2")
    assert srv.servers == {}
    assert proxy.runtime.view.version == "v2"


async def test_a_request_whose_head_is_still_arriving_is_served_with_connection_close():
    proxy = Proxy(bookinfo_view())
    client = proxy.client()
    client.send(GET_BOOKS[:20])  # the request line and part of a header: accepted, not idle
    await settle()
    time = FakeTime()

    def rest_arrives() -> None:
        client.send(GET_BOOKS[20:])

    time.at[0.2] = rest_arrives
    time.at[0.5] = lambda: proxy.upstreams[0].respond(OK)
    result = await drain.drain(proxy.runtime.connections, proxy.runtime.counters, clock=time.clock, sleep=time.sleep)
    (response,) = client.responses()
    assert (response.first, response.header("connection")) == ("200", "close")
    assert client.transport.closed
    assert (result.idle, result.finished, result.forced) == (0, 1, 0)
