"""The control plane's span collector: what `meshctl trace REQUEST_ID` reads (Istio leaves this to Zipkin or
Jaeger; locally Weir keeps the last traces itself, so one request can be followed with nothing installed).

Proxies send batches of spans (mesh.proxy.telemetry) over the mesh channel, authenticated by their
workload certificate (`POST /v1/spans`). The store keeps the MAX_TRACES most recently touched traces,
each up to MAX_SPANS_PER_TRACE spans, and an index from `x-request-id` to trace: memory stays bounded
whatever the traffic. Spans are checked for shape only (ids, times, name); nothing else is trusted.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

MAX_TRACES = 2_000
MAX_SPANS_PER_TRACE = 200
MAX_BATCH = 5_000
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
REQUEST_ID_KEY = "guid:x-request-id"  # Envoy's attribute name for the request id


class SpanError(ValueError):
    """A batch that is not a list of spans; nothing of it is kept."""


def _check(span: Any, index: int) -> dict[str, Any]:
    if not isinstance(span, Mapping):
        raise SpanError(f"spans[{index}]: expected an object")
    if not _TRACE_ID.fullmatch(str(span.get("traceId", ""))) or not _SPAN_ID.fullmatch(str(span.get("spanId", ""))):
        raise SpanError(f"spans[{index}]: traceId must be 32 and spanId 16 lower-case hex digits")
    parent = span.get("parentSpanId") or ""
    if parent and not _SPAN_ID.fullmatch(str(parent)):
        raise SpanError(f"spans[{index}]: parentSpanId must be 16 lower-case hex digits or empty")
    start, end = span.get("startTimeUnixNano"), span.get("endTimeUnixNano")
    if any(isinstance(t, bool) or not isinstance(t, int) for t in (start, end)) or end < start:
        raise SpanError(f"spans[{index}]: startTimeUnixNano/endTimeUnixNano must be integers, end >= start")
    attributes = span.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise SpanError(f"spans[{index}]: attributes must be an object")
    return {"traceId": span["traceId"], "spanId": span["spanId"], "parentSpanId": parent,
            "name": str(span.get("name", ""))[:256], "kind": str(span.get("kind", "")),
            "startTimeUnixNano": start, "endTimeUnixNano": end,
            "attributes": {str(k)[:64]: (v[:1024] if isinstance(v, str) else v)
                           for k, v in list(attributes.items())[:32]
                           if v is None or isinstance(v, str | int | float | bool)}}


class TraceStore:
    def __init__(self, max_traces: int = MAX_TRACES) -> None:
        self.max_traces = max_traces
        self._traces: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._by_request: dict[str, str] = {}
        self.received = 0
        self.dropped = 0

    def add(self, proxy: str, spans: Any) -> int:
        """Keep a batch (all or nothing: SpanError on a malformed span); how many were kept."""
        if isinstance(spans, str | bytes | Mapping) or not isinstance(spans, Iterable):
            raise SpanError("spans must be a list of span objects")
        spans = list(spans)
        if len(spans) > MAX_BATCH:
            raise SpanError(f"a batch holds at most {MAX_BATCH} spans, got {len(spans)}")
        checked = [_check(span, i) for i, span in enumerate(spans)]
        kept = 0
        for span in checked:
            span["proxy"] = proxy
            trace = self._traces.get(span["traceId"])
            if trace is None:
                trace = self._traces[span["traceId"]] = []
                while len(self._traces) > self.max_traces:
                    self._evict()
            else:
                self._traces.move_to_end(span["traceId"])
            if len(trace) >= MAX_SPANS_PER_TRACE:
                self.dropped += 1
                continue
            trace.append(span)
            kept += 1
            request_id = span["attributes"].get(REQUEST_ID_KEY)
            if request_id:
                self._by_request[str(request_id)] = span["traceId"]
        self.received += kept
        return kept

    def _evict(self) -> None:
        trace_id, spans = self._traces.popitem(last=False)
        for span in spans:
            request_id = span["attributes"].get(REQUEST_ID_KEY)
            if request_id and self._by_request.get(str(request_id)) == trace_id:
                del self._by_request[str(request_id)]

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return sorted(self._traces.get(trace_id, ()), key=lambda s: (s["startTimeUnixNano"], s["endTimeUnixNano"]))

    def trace_of_request(self, request_id: str) -> str | None:
        return self._by_request.get(request_id)

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The last traces touched: id, root span name, span count, duration."""
        out = []
        for trace_id in list(reversed(self._traces))[:limit]:
            spans = self.trace(trace_id)
            start = min(s["startTimeUnixNano"] for s in spans)
            end = max(s["endTimeUnixNano"] for s in spans)
            root = next((s for s in spans if not s["parentSpanId"]), spans[0])
            out.append({"traceId": trace_id, "root": root["name"], "spans": len(spans),
                        "durationMs": round((end - start) / 1e6, 3),
                        "requestId": root["attributes"].get(REQUEST_ID_KEY)})
        return out
