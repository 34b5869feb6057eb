"""Per-request telemetry off the hot path: Istio metrics, JSON access log lines and trace spans.

`record` runs once per finished exchange and only stores a tuple of values it already has (no formatting,
no I/O); a flush every FLUSH_S formats the batch: one JSON line per request on the access log stream
(stdout by default, as Istio's `accessLogFile: /dev/stdout`, so `meshctl logs W --proxy` and
`kubectl logs -c istio-proxy` show them), and the sampled spans to each exporter (the control plane's
collector over the mesh channel; an OTLP/HTTP endpoint when configured). Everything waiting is bounded
(MAX_PENDING): beyond it entries are dropped and counted (`weir_telemetry_dropped_total{kind}`), never
queued without limit. The last RECENT entries stay in memory for the admin `/access_log` and the dashboard.

An access log line (Envoy's names)::

    {"start_time": "2026-11-26T04:00:00.123Z", "method": "GET", "path": "/books", "protocol": "HTTP/1.1",
     "response_code": 200, "response_flags": "-", "bytes_received": 0, "bytes_sent": 512, "duration": 3,
     "upstream_host": "127.0.0.1:21031", "upstream_cluster": "outbound|9080|v1|books.bookinfo.svc.cluster.local",
     "authority": "books:9080", "request_id": "…", "trace_id": "…", "user_agent": "…",
     "downstream_remote_address": "127.0.0.1", "downstream_peer_principal": "spiffe://…", "direction":
     "outbound", "workload": "gw-v1"}
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring_ascii as _quote  # the json module's C string encoder
from typing import IO, TYPE_CHECKING, Any

from mesh.proxy import tracing

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange

log = logging.getLogger(__name__)

FLUSH_S = 0.1
# Entries formatted per loop callback: a flush is cut into slices so that formatting never holds the event
# loop for more than a fraction of a millisecond; requests are served between slices.
FLUSH_SLICE = 128
MAX_PENDING = 20_000  # access log entries or spans waiting for a flush / an export
RECENT = 200  # entries kept for /access_log
EXPORT_BATCH = 2_000  # spans per export request

Exporter = Callable[[list[dict[str, Any]]], Awaitable[None]]


_second = [-1, ""]  # the last whole second formatted, and its text: most entries share it
_gmtime, _strftime = time.gmtime, time.strftime


def _iso(wall: float) -> str:
    """`2026-11-26T04:00:00.123Z`; the date and time part is formatted once per second."""
    sec = int(wall)
    if sec != _second[0]:
        _second[0], _second[1] = sec, _strftime("%Y-%m-%dT%H:%M:%S", _gmtime(sec))
    return f"{_second[1]}.{int((wall - sec) * 1000):03d}Z"


def _text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


class Telemetry:
    __slots__ = ("workload", "loop", "tracer", "stream", "exporters", "counters", "recent", "logs", "spans",
                 "_flush", "_exporting")

    def __init__(self, workload: str, loop: asyncio.AbstractEventLoop, counters: Any, *,
                 tracer: tracing.Tracer | None = None, stream: IO[str] | None = sys.stdout,
                 exporters: tuple[Exporter, ...] = ()) -> None:
        self.workload = workload
        self.loop = loop
        self.tracer = tracer  # None: no spans, trace headers passed on untouched
        self.stream = stream  # None: no access log
        self.exporters = exporters
        self.counters = counters
        self.recent: deque[tuple] = deque(maxlen=RECENT)
        self.logs: list[tuple] = []
        self.spans: list[tuple] = []
        self._flush: asyncio.TimerHandle | None = None
        self._exporting = False

    def record(self, exchange: Exchange, direction: str, duration_s: float) -> None:
        """Keep what the exchange knows; formatting waits for the flush."""
        target = exchange.target
        trace = exchange.trace
        if trace is None and self.tracer is not None:
            trace = self.tracer.start(exchange.head.headers)  # answered locally: no upstream head was built
        entry = (time.time() - duration_s, duration_s, direction, exchange.method, exchange.head, exchange.status,
                 exchange.flag, exchange.body_size, exchange.bytes_sent,
                 target.endpoint if target is not None else None,
                 target.cluster.spec.name if target is not None and target.cluster is not None else "",
                 exchange.conn.peer_identity, exchange.conn.peer_ip, trace, exchange.host_header)
        self.recent.append(entry)
        if self.stream is not None:
            self._keep(self.logs, entry, "access_log")
        if trace is not None and trace[0].sampled and self.exporters:
            self._keep(self.spans, entry, "span")

    def _keep(self, pending: list, entry: tuple, kind: str) -> None:
        if len(pending) >= MAX_PENDING:
            self.counters.inc("telemetry_dropped_total", kind=kind)
            return
        pending.append(entry)
        if self._flush is None:
            self._flush = self.loop.call_later(FLUSH_S, self.flush)

    # -- formatting and output (every FLUSH_S, not per request) -----------------------------------------------
    def entry_dict(self, entry: tuple) -> dict[str, Any]:
        (wall, duration_s, direction, method, head, status, flag, received, sent, endpoint, cluster, principal,
         remote, trace, authority) = entry
        return {
            "start_time": _iso(wall), "method": method, "path": head.path, "protocol": "HTTP/1.1",
            "response_code": status, "response_flags": flag, "bytes_received": received, "bytes_sent": sent,
            "duration": round(duration_s * 1000), "upstream_host": f"{endpoint.address}:{endpoint.port}" if endpoint
            else None, "upstream_cluster": cluster or None, "authority": authority.decode("latin-1"),
            "request_id": head.header(b"x-request-id"), "trace_id": trace[0].trace_id if trace else None,
            "user_agent": head.header(b"user-agent"), "downstream_remote_address": remote or None,
            "downstream_peer_principal": principal, "direction": direction, "workload": self.workload,
        }

    def span_dict(self, entry: tuple) -> dict[str, Any]:
        (wall, duration_s, direction, method, head, status, flag, _, _, endpoint, cluster, principal, _,
         trace, host) = entry
        ctx, span_id = trace
        authority = host.decode("latin-1")
        return {
            "traceId": ctx.trace_id, "spanId": span_id, "parentSpanId": ctx.parent_id,
            "name": f"{authority}{head.path.split('?', 1)[0]}", "kind": "SERVER" if direction == "inbound" else "CLIENT",
            "startTimeUnixNano": int(wall * 1e9), "endTimeUnixNano": int((wall + duration_s) * 1e9),
            "attributes": {"workload": self.workload, "direction": direction, "http.method": method,
                           "http.url": head.path, "http.status_code": status, "response_flags": flag,
                           "upstream_cluster": cluster or None, "guid:x-request-id": head.header(b"x-request-id"),
                           "peer.address": f"{endpoint.address}:{endpoint.port}" if endpoint else None,
                           "downstream_peer_principal": principal},
        }

    def recent_dicts(self, limit: int) -> list[dict[str, Any]]:
        return [self.entry_dict(e) for e in list(self.recent)[-limit:]] if limit > 0 else []

    def log_line(self, entry: tuple) -> str:
        """`entry_dict` as one JSON line, built directly (a third of json.dumps' time on this shape)."""
        (wall, duration_s, direction, method, head, status, flag, received, sent, endpoint, cluster, principal,
         remote, trace, authority) = entry
        upstream = f'"{endpoint.address}:{endpoint.port}"' if endpoint else "null"
        return (f'{{"start_time":"{_iso(wall)}","method":{_quote(method)},"path":{_quote(head.path)},'
                f'"protocol":"HTTP/1.1","response_code":{status},"response_flags":"{flag}",'
                f'"bytes_received":{received},"bytes_sent":{sent},"duration":{round(duration_s * 1000)},'
                f'"upstream_host":{upstream},"upstream_cluster":{_text(cluster or None)},'
                f'"authority":{_quote(authority.decode("latin-1"))},'
                f'"request_id":{_text(head.header(b"x-request-id"))},'
                f'"trace_id":{_text(trace[0].trace_id if trace else None)},'
                f'"user_agent":{_text(head.header(b"user-agent"))},'
                f'"downstream_remote_address":{_text(remote or None)},'
                f'"downstream_peer_principal":{_text(principal)},"direction":"{direction}",'
                f'"workload":{_quote(self.workload)}}}\n')

    def flush(self) -> None:
        """One slice of the waiting work; the rest is scheduled right after (call_soon), so requests that
        arrive meanwhile are served between slices."""
        self._flush = None
        logs = self.logs
        if logs and self.stream is not None:
            batch = logs[:FLUSH_SLICE]
            del logs[:FLUSH_SLICE]
            try:
                self.stream.write("".join([self.log_line(e) for e in batch]))
                if not logs:
                    self.stream.flush()
            except (OSError, ValueError):  # a closed or full stream must not break the proxy
                self.counters.inc("telemetry_dropped_total", amount=len(batch), kind="access_log")
        if self.spans and not self._exporting:
            batch, self.spans = self.spans[:EXPORT_BATCH], self.spans[EXPORT_BATCH:]
            self._exporting = True
            self.loop.create_task(self._export([self.span_dict(e) for e in batch]))
        if self.logs:
            self._flush = self.loop.call_soon(self.flush)
        elif self.spans and not self._exporting:
            self._flush = self.loop.call_later(FLUSH_S, self.flush)

    async def _export(self, spans: list[dict[str, Any]]) -> None:
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
            self._exporting = False
            if self.spans and self._flush is None:
                self._flush = self.loop.call_later(FLUSH_S, self.flush)
