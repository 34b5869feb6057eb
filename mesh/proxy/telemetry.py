"""Per-request telemetry off the hot path: Istio metrics, JSON access log lines and trace spans.

`record` runs once per finished exchange and only stores a tuple of values it already has (no formatting,
no I/O). The entries become one JSON line per request, FLUSH_SLICE at a time, in a loop callback of their
own as soon as that many wait, the rest at the flush every FLUSH_S; the flush also hands the text to the
access log stream (stdout by default, as Istio's `accessLogFile: /dev/stdout`, so `meshctl logs W --proxy`
and `kubectl logs -c istio-proxy` show them; `log_writer`'s thread then wakes once per flush) and the
sampled spans to each exporter (the control plane's collector over the mesh channel; an OTLP/HTTP endpoint
when configured).

Why format so soon. An entry points to what its request made (path, ids, the span): formatted a few dozen
requests later, all of it is still in the CPU's caches, and freed, its memory is reused hot by the next
requests. Kept for a whole flush (1,300 entries at 13,000 requests/s), it went cold, and so did the
memory the flush freed, for the allocations after it: a sidecar pair spent 2.7 µs more a request (of 87)
in the allocator, the formatter and freeing (perf), about 6 % of its throughput (docs/benchmark.md).

Everything waiting is bounded (MAX_PENDING entries; spans also MAX_PENDING_SPAN_BYTES): beyond it entries
are dropped and counted (`weir_telemetry_dropped_total{kind}`), never queued without limit. Waiting log
entries need no byte bound: fewer than FLUSH_SLICE of them wait past a loop iteration, and none past the
flush, whatever the stream does (`log_writer` bounds the unwritten text in bytes). Spans wait for their
exporter, which may stall for its whole timeout while callers force sampling. The last RECENT lines stay in
memory, as the text of their slices, for the admin `/access_log` and the dashboard, unless telemetry is off
(`keep_recent=False`, the proxy's `--telemetry off`: metrics only): then `record` is not even called,
nothing being kept.

An access log line has Envoy's field names; `mesh.proxy.log_line` formats it and shows one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import IO, TYPE_CHECKING, Any

from mesh.proxy import headers as headers_mod
from mesh.proxy import log_line, tracing
from mesh.proxy.log_writer import ThreadedWriter

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange

log = logging.getLogger(__name__)

FLUSH_S = 0.1
# Entries formatted per loop callback, and how many wait before one is scheduled (module docstring): small
# enough that their objects are still cached, and that formatting holds the event loop for only about ten
# microseconds; large enough that the callback's own cost is shared by many lines.
FLUSH_SLICE = 32
MAX_PENDING = 20_000  # access log entries or spans waiting for a flush / an export
# What waiting spans may hold. An entry keeps what the client sent (path, authority, user agent, request id:
# up to 76 KiB with a head at the listener's limits), and callers can force sampling (traceparent flags 01):
# with a stalled span exporter, MAX_PENDING entries alone could hold 1.5 GiB.
MAX_PENDING_SPAN_BYTES = 16 * 1024 * 1024
ENTRY_BYTES = 400  # an entry's own share (its tuple, numbers, span tuple), roughly, besides what clients sent
RECENT = 200  # lines kept for /access_log
EXPORT_BATCH = 2_000  # spans per export request

CLOSE_TIMEOUT_S = 2.0  # at exit, how long the last lines may take to be written

Exporter = Callable[[list[dict[str, Any]]], Awaitable[None]]


def entry_bytes(entry: tuple) -> int:
    """The memory a waiting entry holds, as MAX_PENDING_SPAN_BYTES counts it (ENTRY_FIELDS' order)."""
    return ENTRY_BYTES + len(entry[4]) + len(entry[14] or b"") + len(entry[15] or b"") + len(entry[16] or b"")


def _request_id_and_agent(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """The last `x-request-id` and `user-agent` of a request head (`headers.upstream_request_head` notes
    them on the exchange as it copies the head; a locally answered request is scanned here)."""
    request_id = user_agent = None
    for name, value in headers:
        if name == headers_mod.REQUEST_ID:
            request_id = value
        elif name == headers_mod.USER_AGENT:
            user_agent = value
    return request_id, user_agent


class Telemetry:
    __slots__ = ("workload", "lines", "loop", "tracer", "stream", "exporters", "counters", "keep_recent", "recent",
                 "recent_lines", "logs", "spans", "span_bytes", "recording", "_unflushed", "_flush", "_exporting")

    def __init__(self, workload: str, loop: asyncio.AbstractEventLoop, counters: Any, *,
                 tracer: tracing.Tracer | None = None, stream: IO[bytes] | None = None,
                 exporters: tuple[Exporter, ...] = (), keep_recent: bool = True) -> None:
        self.workload = workload
        self.lines = log_line.LineFormat(workload)
        self.loop = loop
        self.tracer = tracer  # None: no spans, trace headers passed on untouched
        self.stream = stream  # binary (`log_writer.ThreadedWriter`); None: no access log
        self.exporters = exporters
        self.counters = counters
        self.keep_recent = keep_recent
        self.recent: deque[tuple[bytes, int]] = deque()  # (the text of a slice, its lines), newest last
        self.recent_lines = 0  # lines in `recent`: RECENT or more once that many requests were formatted
        self.logs: list[tuple] = []  # entries waiting to be formatted
        self.spans: list[tuple] = []
        self.span_bytes = 0  # entry_bytes of `spans` and of the batch being exported
        self._unflushed = 0  # lines written to the stream since it was last flushed
        self._flush: asyncio.TimerHandle | None = None
        self._exporting = False
        # Something keeps what `record` would make: the recent lines, the access log, or span exporters.
        self.recording = keep_recent or stream is not None or bool(exporters)

    def record(self, exchange: Exchange, direction: str, duration_s: float) -> None:
        """Keep what the exchange knows; formatting waits for its slice. Called once per request, when
        `recording` (the caller checks): attributes are read once each, and the access log's entry is kept
        here, without a call of its own."""
        trace = exchange.trace
        request_id = exchange.request_id
        if request_id is None:  # answered locally: no upstream head was built, which notes both headers
            request_id, user_agent = _request_id_and_agent(exchange.head.headers)
            if trace is None and self.tracer is not None:
                trace = self.tracer.start(exchange.head.headers)
        else:
            user_agent = exchange.user_agent
        target = exchange.target
        if target is None:
            endpoint, cluster = None, ""
        else:
            endpoint, cluster = target.endpoint, target.cluster
            cluster = cluster.spec.name if cluster is not None else ""
        conn = exchange.conn
        entry = (time.time() - duration_s, duration_s, direction, exchange.method, exchange.head.path,
                 exchange.status, exchange.flag, exchange.body_size, exchange.bytes_sent, endpoint, cluster,
                 conn.peer_identity, conn.peer_ip, trace, exchange.host_header, request_id, user_agent)
        logs = self.logs
        if len(logs) < MAX_PENDING:
            logs.append(entry)
            if len(logs) == FLUSH_SLICE:
                self.loop.call_soon(self._format_ready)
            if self._flush is None:
                self._flush = self.loop.call_later(FLUSH_S, self.flush)
        else:
            self.counters.inc("telemetry_dropped_total", kind="access_log")
        if self.exporters and trace is not None and trace[tracing.SAMPLED]:
            self._keep_span(entry)

    def _keep_span(self, entry: tuple) -> None:
        size = entry_bytes(entry)
        if len(self.spans) >= MAX_PENDING or self.span_bytes + size > MAX_PENDING_SPAN_BYTES:
            self.counters.inc("telemetry_dropped_total", kind="span")
            return
        self.spans.append(entry)
        self.span_bytes += size
        if self._flush is None:
            self._flush = self.loop.call_later(FLUSH_S, self.flush)

    # -- formatting and output (every FLUSH_S, not per request) -----------------------------------------------
    def entry_dict(self, entry: tuple) -> dict[str, Any]:
        """An access log entry as a dict (the admin `/access_log`, the dashboard): its line, parsed, so the
        fields are defined once, in `log_line`."""
        return json.loads(self.log_line(entry))

    def span_dict(self, entry: tuple) -> dict[str, Any]:
        (wall, duration_s, direction, method, path, status, flag, _, _, endpoint, cluster, principal, _,
         trace, host, request_id, _) = entry
        trace_id, parent_id, _, span_id, _ = trace  # ASCII bytes (tracing.Span)
        authority = host.decode("latin-1")
        return {
            "traceId": trace_id.decode(), "spanId": span_id.decode(), "parentSpanId": parent_id.decode(),
            "name": f"{authority}{path.split('?', 1)[0]}", "kind": "SERVER" if direction == "inbound" else "CLIENT",
            "startTimeUnixNano": int(wall * 1e9), "endTimeUnixNano": int((wall + duration_s) * 1e9),
            "attributes": {"workload": self.workload, "direction": direction, "http.method": method,
                           "http.url": path, "http.status_code": status, "response_flags": flag,
                           "upstream_cluster": cluster or None,
                           "guid:x-request-id": request_id.decode("latin-1") if request_id is not None else None,
                           "peer.address": f"{endpoint.address}:{endpoint.port}" if endpoint else None,
                           "downstream_peer_principal": principal},
        }

    def recent_dicts(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` requests' lines (at most RECENT), parsed, oldest first; those still waiting for
        their slice are formatted for this too (and again, once, by their slice)."""
        limit = min(limit, RECENT)
        if limit <= 0 or not self.keep_recent:
            return []
        texts = [text for text, _ in self.recent]
        if self.logs:
            texts.append(self.lines.lines(self.logs[-limit:]))
        return [json.loads(line) for line in b"".join(texts).splitlines()[-limit:]]

    def log_line(self, entry: tuple) -> bytes:
        return self.lines.line(entry)

    def flush(self) -> None:
        """One slice of the waiting work; the rest is scheduled right after (call_soon), so requests that
        arrive meanwhile are served between slices. Once no entry waits, the stream is flushed: the text
        goes to the writer's thread."""
        self._flush = None
        if self.logs:
            self._format_slice()
        if not self.logs:
            self._flush_stream()
        if self.spans and not self._exporting:
            batch, self.spans = self.spans[:EXPORT_BATCH], self.spans[EXPORT_BATCH:]
            self._exporting = True
            # The batch counts against MAX_PENDING_SPAN_BYTES until its export ends: a stalled exporter holds it.
            self.loop.create_task(self._export([self.span_dict(e) for e in batch], sum(map(entry_bytes, batch))))
        if self.logs:
            self._flush = self.loop.call_soon(self.flush)
        elif self.spans and not self._exporting:
            self._flush = self.loop.call_later(FLUSH_S, self.flush)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """At exit, once the drain has finished the last requests: their lines, still waiting for the next
        flush, are formatted and written now (a SIGTERM would otherwise lose up to FLUSH_S of them). Spans
        still waiting are not exported: an export is a request the exiting proxy would have to wait for."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self.stream is None:
            return
        while self.logs:
            self._format_slice()
        self._flush_stream()
        if isinstance(self.stream, ThreadedWriter) and not self.stream.close(timeout_s):
            log.warning("access log: lines still unwritten after %.1f s at exit", timeout_s)

    def _format_ready(self) -> None:
        """FLUSH_SLICE entries wait (`record` called this soon): formatted now, while they are cached. One
        loop iteration can end more requests than that (64 connections), so every whole slice is taken."""
        while len(self.logs) >= FLUSH_SLICE:
            self._format_slice()

    def _format_slice(self) -> None:
        """The next FLUSH_SLICE waiting entries formatted: the text kept for /access_log and written to the
        stream (which keeps it until `_flush_stream`: `log_writer.ThreadedWriter`)."""
        batch = self.logs[:FLUSH_SLICE]
        del self.logs[:FLUSH_SLICE]
        text = self.lines.lines(batch)
        if self.keep_recent:
            recent = self.recent
            recent.append((text, len(batch)))
            self.recent_lines += len(batch)
            while self.recent_lines - recent[0][1] >= RECENT:  # the oldest slice is no longer needed
                self.recent_lines -= recent.popleft()[1]
        if self.stream is not None:
            try:
                self.stream.write(text)
                self._unflushed += len(batch)
            except (OSError, ValueError):  # a closed or full stream must not break the proxy
                self.counters.inc("telemetry_dropped_total", amount=len(batch), kind="access_log")

    def _flush_stream(self) -> None:
        if self.stream is None or not self._unflushed:
            return
        unflushed, self._unflushed = self._unflushed, 0
        try:
            self.stream.flush()
        except (OSError, ValueError):  # a file's buffer that cannot be written: its lines are lost
            self.counters.inc("telemetry_dropped_total", amount=unflushed, kind="access_log")

    async def _export(self, spans: list[dict[str, Any]], size: int) -> None:
        try:
            for exporter in self.exporters:
                try:
                    await exporter(spans)
                    self.counters.inc("spans_exported_total", amount=len(spans))
                except Exception as exc:  # an unreachable collector costs spans, never requests
                    self.counters.inc("telemetry_dropped_total", amount=len(spans), kind="span")
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("span export failed: %s", exc)
        finally:
            self.span_bytes -= size
            self._exporting = False
            if self.spans and self._flush is None:
                self._flush = self.loop.call_later(FLUSH_S, self.flush)
