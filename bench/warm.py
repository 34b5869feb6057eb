"""A graceful warm-up: fill a proxy's upstream pool before a measured run, the way steady traffic keeps it full.

wrk ends by closing its connections with a request in flight on each; the proxy then closes those requests'
upstream connections (their responses can no longer be delivered, as Envoy resets the stream), so after any
wrk run the pool has lost as many connections as wrk had. A measured run that starts right after would open
them again inside its measured seconds, and for the mTLS pair that means handshakes (77 in one 64-connection
round). Here `connections` clients each send `requests_each` requests one after another, every response read
to its end before the next request and before closing: the proxy opens up to `connections` upstream
connections and keeps every one of them.

    fill_pool("127.0.0.1", 15001, "/1k", host_header="upstream:80", connections=64)
"""

from __future__ import annotations

import asyncio

import httptools

REQUESTS_EACH = 4
TIMEOUT_S = 10.0
READ_SIZE = 65536


class _Response:
    """httptools callbacks: only whether the response is complete matters."""

    __slots__ = ("complete",)

    def __init__(self) -> None:
        self.complete = False

    def on_message_complete(self) -> None:
        self.complete = True


async def _requests(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes,
                    requests_each: int) -> int:
    ok = 0
    try:
        for _ in range(requests_each):
            writer.write(request)
            response = _Response()
            parser = httptools.HttpResponseParser(response)
            while not response.complete:
                data = await reader.read(READ_SIZE)
                if not data:
                    return ok
                parser.feed_data(data)
            ok += parser.get_status_code() == 200
    finally:
        writer.close()
    return ok


async def _fill(host: str, port: int, request: bytes, connections: int, requests_each: int) -> int:
    # Every client connects before any sends, so that the first requests overlap and the pool grows to match.
    opened = await asyncio.wait_for(
        asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(connections))), TIMEOUT_S)
    answered = await asyncio.wait_for(
        asyncio.gather(*(_requests(reader, writer, request, requests_each) for reader, writer in opened)), TIMEOUT_S)
    return sum(answered)


def fill_pool(host: str, port: int, path: str, *, host_header: str | None = None, connections: int,
              requests_each: int = REQUESTS_EACH) -> int:
    """Requests answered 200 (`connections` × `requests_each` when all went well)."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {host_header or f'{host}:{port}'}\r\n"
               f"User-Agent: weir-bench-warm\r\n\r\n").encode("latin-1")
    return asyncio.run(_fill(host, port, request, connections, requests_each))
