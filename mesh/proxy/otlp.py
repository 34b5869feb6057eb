"""Span export to an OpenTelemetry collector: OTLP/HTTP with the JSON encoding (`POST <endpoint>/v1/traces`).

The encoding is the OTLP protobuf schema's canonical JSON mapping (trace and span ids as hex, times as
decimal strings, attributes as typed values); an OpenTelemetry Collector, Jaeger or Tempo take it as is.
Written here rather than through the OpenTelemetry SDK: spans are already recorded by the proxy's own
telemetry (mesh.proxy.telemetry), so only this shape is needed, not the SDK's tracer on the hot path.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

from mesh.proxy import channel

KIND = {"SERVER": 2, "CLIENT": 3}  # OTLP SpanKind
STATUS_ERROR = 2  # OTLP Status.code for a 5xx answer (OpenTelemetry's HTTP semantic conventions)
MAX_ANSWER = 64 * 1024


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def encode(service: str, namespace: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    """mesh.proxy.telemetry span dicts → an OTLP ExportTraceServiceRequest (JSON mapping)."""
    out = []
    for span in spans:
        code = span["attributes"].get("http.status_code") or 0
        otlp = {
            "traceId": span["traceId"], "spanId": span["spanId"], "name": span["name"],
            "kind": KIND.get(span["kind"], 1),
            "startTimeUnixNano": str(span["startTimeUnixNano"]), "endTimeUnixNano": str(span["endTimeUnixNano"]),
            "attributes": [{"key": k, "value": _value(v)} for k, v in span["attributes"].items() if v is not None],
            "status": {"code": STATUS_ERROR} if code >= 500 or code == 0 else {},
        }
        if span["parentSpanId"]:
            otlp["parentSpanId"] = span["parentSpanId"]
        out.append(otlp)
    resource = [{"key": "service.name", "value": {"stringValue": service}},
                {"key": "service.namespace", "value": {"stringValue": namespace}}]
    return {"resourceSpans": [{"resource": {"attributes": resource},
                               "scopeSpans": [{"scope": {"name": "weir.proxy"}, "spans": out}]}]}


def exporter(endpoint: str, service: str, namespace: str):
    """An async exporter posting each batch to `endpoint` (http[s]://host:port, path /v1/traces added)."""
    url = urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"--otlp-endpoint must be an http(s)://host:port URL, got {endpoint!r}")
    port = url.port or (443 if url.scheme == "https" else 80)
    path = (url.path.rstrip("/") or "") + "/v1/traces"
    context = ssl.create_default_context() if url.scheme == "https" else None

    async def export(spans: list[dict[str, Any]]) -> None:
        body = json.dumps(encode(service, namespace, spans), separators=(",", ":")).encode()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(url.hostname, port, ssl=context), channel.REQUEST_TIMEOUT_S)
        try:
            writer.write(channel.request_bytes(path, url.hostname, port, body, close=True))
            status, _, _ = await asyncio.wait_for(channel.read_response(reader, MAX_ANSWER), channel.REQUEST_TIMEOUT_S)
        except BaseException:
            writer.transport.abort()  # close() would wait to flush to a collector that may never read
            raise
        channel.close_or_abort(writer)
        if status >= 300:
            raise ConnectionError(f"OTLP endpoint {endpoint} answered {status}")

    return export
