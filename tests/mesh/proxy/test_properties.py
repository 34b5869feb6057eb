"""Property tests: the request path survives arbitrary bytes; `split_host` survives arbitrary strings."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mesh.proxy import downstream
from tests.mesh.proxy.fakes import Proxy, bookinfo_view, parse_responses, settle

FRAGMENTS = [
    b"GET / HTTP/1.1\r\n", b"POST /books HTTP/1.1\r\n", b"GET http://books:9080/x HTTP/1.1\r\n",
    b"HEAD / HTTP/1.0\r\n", b"Host: books:9080\r\n", b"Host: reviews:9080\r\n", b"Host: [::1]:x\r\n",
    b"Content-Length: 3\r\n", b"Content-Length: -1\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Expect: 100-continue\r\n", b"Connection: close\r\n", b"Upgrade: websocket\r\nConnection: upgrade\r\n",
    b"\r\n", b"abc", b"3\r\nabc\r\n", b"0\r\n\r\n", b"\x00", b"\xff\xfe", b" ", b":",
]
payloads = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=40)), max_size=12).map(b"".join)


def run(data: bytes, cuts: list[int]) -> None:
    async def body() -> None:
        proxy = Proxy(bookinfo_view())
        client = proxy.client()
        start = 0
        for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
            client.send(data[start:cut])  # must never raise
            start = cut
            await settle(3)
        for upstream in proxy.upstreams:
            upstream.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await settle(3)
        if client.transport.closed:
            statuses = [int(r.first) for r in parse_responses(client.transport.data) if r.first]
            assert statuses, "a connection is never closed without an answer"

    asyncio.run(body())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads, st.lists(st.integers(min_value=0, max_value=500), max_size=4))
@example(b"GET / HTTP/1.1\r\nHost: books:\xb2\r\n\r\n", [])
@example(b"GET / HTTP/1.1\r\nHost: books:9080\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n", [])
def test_request_parser_never_raises_out_of_data_received(data, cuts):
    run(data, cuts)


@given(st.text())
@example("books:\u00b2")
@example("[::1")
@example("[::1]:")
def test_split_host_never_raises(value):
    host, port = downstream.split_host(value, 80)
    assert isinstance(host, str) and isinstance(port, int) and port >= 0


@given(st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True), st.integers(min_value=0, max_value=65535))
def test_split_host_round_trips_name_and_port(name, port):
    assert downstream.split_host(f"{name}:{port}", 80) == (name, port)
    assert downstream.split_host(name, 80) == (name, 80)
    assert downstream.split_host(f"[::{port}]:{port}", 80) == (f"::{port}", port)
