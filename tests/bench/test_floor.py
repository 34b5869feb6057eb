"""The bench's minimal Python proxy (`bench.floor`) over real loopback sockets: it must proxy correctly, or the
floor it reports would be the cost of something else."""

from __future__ import annotations

import asyncio

from bench import floor

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n" + b"x" * 1024


async def upstream(seen: list[bytes], connections: list[int]):
    """Answers every request head with 1 KiB, keep-alive; records the heads and counts connections."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head)
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


def test_requests_are_proxied_over_one_kept_alive_upstream_connection():
    asyncio.run(_requests_are_proxied_over_one_kept_alive_upstream_connection())


async def _requests_are_proxied_over_one_kept_alive_upstream_connection():
    seen: list[bytes] = []
    connections: list[int] = []
    up = await upstream(seen, connections)
    proxy = await floor.serve(up.sockets[0].getsockname()[1], 0)
    port = proxy.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(3):
            got = await ask(reader, writer, b"GET /1k?i=%d HTTP/1.1\r\nHost: up\r\nConnection: keep-alive\r\n"
                                            b"X-Test: %d\r\n\r\n" % (i, i))
            assert got == ANSWER
        assert len(connections) == 1  # pooled: the second and third requests reused the first connection
        assert [h.split(b"\r\n")[0] for h in seen] == [b"GET /1k?i=%d HTTP/1.1" % i for i in range(3)]
        assert b"X-Test: 2\r\n" in seen[2] and b"Host: up\r\n" in seen[2]
        assert b"Connection" not in seen[2]  # hop-by-hop: not passed on
        got = await ask(reader, writer, b"GET /empty HTTP/1.1\r\nHost: up\r\nContent-Length: 0\r\n\r\n")
        assert got == ANSWER and b"Content-Length" not in seen[3]  # an empty body is no body
    finally:
        writer.close()
        proxy.close()
        up.close()


def test_a_request_with_a_body_is_refused_not_half_forwarded():
    asyncio.run(_a_request_with_a_body_is_refused_not_half_forwarded())


async def _a_request_with_a_body_is_refused_not_half_forwarded():
    seen: list[bytes] = []
    up = await upstream(seen, [])
    proxy = await floor.serve(up.sockets[0].getsockname()[1], 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.sockets[0].getsockname()[1])
    try:
        writer.write(b"POST / HTTP/1.1\r\nHost: up\r\nContent-Length: 2\r\n\r\nhi")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 501 ")
        assert seen == []
    finally:
        writer.close()
        proxy.close()
        up.close()


def test_an_unreachable_upstream_is_answered_502():
    asyncio.run(_an_unreachable_upstream_is_answered_502())


async def _an_unreachable_upstream_is_answered_502():
    free = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = free.sockets[0].getsockname()[1]
    free.close()
    await free.wait_closed()
    proxy = await floor.serve(dead_port, 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.sockets[0].getsockname()[1])
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: up\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 502 ")
    finally:
        writer.close()
        proxy.close()
