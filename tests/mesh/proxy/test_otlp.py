"""OTLP/HTTP JSON export (mesh.proxy.otlp): the encoding of telemetry span dicts (kinds, string nanos, typed
attributes, error status) and the exporter against a real loopback HTTP server started in the test."""

from __future__ import annotations

import asyncio
import json

import pytest

from mesh.proxy import otlp

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"
P = "b7ad6b7169203331"


def span(kind: str = "CLIENT", parent: str = P, status: int | None = 200, **attributes) -> dict:
    return {"traceId": T, "spanId": S, "parentSpanId": parent, "name": "books:9080/books", "kind": kind,
            "startTimeUnixNano": 1_700_000_000_000_000_000, "endTimeUnixNano": 1_700_000_000_250_000_000,
            "attributes": {"http.status_code": status, **attributes}}


def test_encode_maps_to_otlp_json():
    doc = otlp.encode("gw", "bookinfo", [span(
        "SERVER", status=200, workload="gw-v1", sampled=True, upstream_cluster=None, ratio=0.5)])
    assert doc == {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gw"}},
                                    {"key": "service.namespace", "value": {"stringValue": "bookinfo"}}]},
        "scopeSpans": [{"scope": {"name": "weir.proxy"}, "spans": [{
            "traceId": T, "spanId": S, "parentSpanId": P, "name": "books:9080/books", "kind": 2,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000250000000",
            "attributes": [{"key": "http.status_code", "value": {"intValue": "200"}},
                           {"key": "workload", "value": {"stringValue": "gw-v1"}},
                           {"key": "sampled", "value": {"boolValue": True}},
                           {"key": "ratio", "value": {"doubleValue": 0.5}}],
            "status": {}}]}]}]}


@pytest.mark.parametrize(("kind", "number"), [("SERVER", 2), ("CLIENT", 3), ("INTERNAL", 1), ("", 1)])
def test_span_kinds(kind, number):
    assert otlp.encode("s", "n", [span(kind)])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"] == number


@pytest.mark.parametrize(("status", "error"), [
    (200, False), (302, False), (404, False), (499, False), (500, True), (503, True), (0, True), (None, True)])
def test_error_status_for_5xx_and_no_answer(status, error):
    encoded = otlp.encode("s", "n", [span(status=status)])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert encoded["status"] == ({"code": otlp.STATUS_ERROR} if error else {})


def test_a_root_span_has_no_parent_field_and_bool_is_not_an_int():
    [encoded] = otlp.encode("s", "n", [span(parent="", flag=False)])["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert "parentSpanId" not in encoded
    assert {"key": "flag", "value": {"boolValue": False}} in encoded["attributes"]


def test_encode_of_no_spans():
    assert otlp.encode("s", "n", [])["resourceSpans"][0]["scopeSpans"][0]["spans"] == []


@pytest.mark.parametrize("endpoint", ["grpc://collector:4317", "collector:4318", "ftp://x", "http://", "https:///v1"])
def test_exporter_refuses_a_non_http_url(endpoint):
    with pytest.raises(ValueError, match="http"):
        otlp.exporter(endpoint, "gw", "bookinfo")


class Collector:
    """A loopback HTTP/1.1 server answering every request with `status`; keeps (request head, body)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[list[bytes], bytes]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Collector:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = []
        while (line := await reader.readline()) not in (b"\r\n", b""):
            head.append(line.rstrip(b"\r\n"))
        length = next(int(h.split(b":", 1)[1]) for h in head if h.lower().startswith(b"content-length:"))
        self.requests.append((head, await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 %d X\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}" % self.status)
        await writer.drain()
        writer.close()


async def test_exporter_posts_the_encoded_batch_to_v1_traces():
    async with Collector() as collector:
        export = otlp.exporter(f"http://127.0.0.1:{collector.port}", "gw", "bookinfo")
        await export([span()])
        await export([span("SERVER")])
    assert len(collector.requests) == 2
    head, body = collector.requests[0]
    assert head[0] == b"POST /v1/traces HTTP/1.1"
    assert b"content-type: application/json" in head and f"host: 127.0.0.1:{collector.port}".encode() in head
    assert json.loads(body) == otlp.encode("gw", "bookinfo", [span()])


async def test_exporter_keeps_the_endpoints_path_prefix():
    async with Collector() as collector:
        await otlp.exporter(f"http://127.0.0.1:{collector.port}/otel/", "gw", "bookinfo")([span()])
    assert collector.requests[0][0][0] == b"POST /otel/v1/traces HTTP/1.1"


async def test_exporter_raises_connection_error_on_a_500():
    async with Collector(status=500) as collector:
        export = otlp.exporter(f"http://127.0.0.1:{collector.port}", "gw", "bookinfo")
        with pytest.raises(ConnectionError, match="answered 500"):
            await export([span()])
    assert len(collector.requests) == 1  # delivered, refused


async def test_exporter_raises_when_nothing_listens():
    async with Collector() as collector:
        port = collector.port
    with pytest.raises(OSError):
        await otlp.exporter(f"http://127.0.0.1:{port}", "gw", "bookinfo")([span()])


@pytest.mark.parametrize("answer", [b"garbage\r\n\r\n", b"HTTP/1.1 503 X\r\ncontent-length: 0\r\n\r\n"],
                         ids=["garbage", "refused-unread"])
async def test_a_failed_export_drops_its_connection_instead_of_waiting_to_flush(monkeypatch, answer):
    """A collector that answers without reading the batch: the exporter's socket still holds most of it, and
    closing would wait for a flush that never comes (the connection and the batch kept open)."""
    monkeypatch.setattr(otlp, "encode", lambda service, namespace, spans: {"padding": "a" * 8_000_000})
    dropped = asyncio.get_running_loop().create_future()

    async def garbage_then_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(answer)
        try:  # never reads the batch; keeps writing until the exporter's side is gone (reset) or stuck
            for _ in range(10_000):
                writer.write(b"x" * 65536)
                await asyncio.wait_for(writer.drain(), 5.0)
            dropped.set_result(False)
        except (TimeoutError, ConnectionError) as exc:
            dropped.set_result(not isinstance(exc, asyncio.TimeoutError))

    server = await asyncio.start_server(garbage_then_wait, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectionError):  # a malformed answer, or a refusal
            await otlp.exporter(f"http://127.0.0.1:{port}", "gw", "bookinfo")([span()])
        assert await dropped
    finally:
        server.close()
