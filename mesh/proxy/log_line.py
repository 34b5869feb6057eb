"""One JSON access log line per request (Envoy's field names), formatted by telemetry, a slice of entries at a time.

A line has nineteen fields, but per request only four of them are new: the start time, the duration, the
request id and the trace id. They come first; the other fifteen (the request and its answer: method, path,
response code and flags, bytes; where it went and who asked: upstream host and cluster, authority, user
agent, downstream address and peer principal, direction, workload) repeat from one request to the next,
on a keep-alive connection almost always, so they are formatted (and JSON-escaped) once and kept as text,
keyed by their values. A line is then the four new values and one lookup, about half the cost of
formatting every field. The cache is bounded in entries (MAX_CACHED, cleared when full) and in size (sets
longer than MAX_CACHED_TEXT are not kept): a client sending a new path each time costs formatting, never
memory. `duration` is in whole milliseconds, truncated as Envoy's `%DURATION%`. A line, fields in the
order written::

    {"start_time":"2026-11-26T04:00:00.123Z","duration":3,"request_id":"…","trace_id":"…","method":"GET",
     "path":"/books","protocol":"HTTP/1.1","response_code":200,"response_flags":"-","bytes_received":0,
     "bytes_sent":512,"upstream_host":"127.0.0.1:21031",
     "upstream_cluster":"outbound|9080|v1|books.bookinfo.svc.cluster.local","authority":"books:9080",
     "user_agent":"…","downstream_remote_address":"127.0.0.1","downstream_peer_principal":"spiffe://…",
     "direction":"outbound","workload":"gw-v1"}

An entry is the tuple `mesh.proxy.telemetry.Telemetry.record` keeps (ENTRY_FIELDS).
"""

from __future__ import annotations

import time
from json.encoder import encode_basestring_ascii as _quote  # the json module's C string encoder
from typing import Any

from mesh.proxy.compiled import speedups as _speedups

ENTRY_FIELDS = ("wall", "duration_s", "direction", "method", "path", "status", "flag", "received", "sent",
                "endpoint", "cluster", "principal", "remote", "trace", "authority", "request_id", "user_agent")
# Formatted sets of repeated fields kept, and the longest kept: the key holds what the client sent (path,
# authority, user agent) and escaping can make it six times longer, so long ones are formatted each time.
# At most about 1024 × (1 KiB of text + a key no longer than it) stay, whatever clients send.
MAX_CACHED = 1024
MAX_CACHED_TEXT = 1024

_gmtime, _strftime = time.gmtime, time.strftime
# A line's text up to its start time's seconds, then its milliseconds with what follows them up to the duration
# (a table: `:03d` formatting costs more than the rest of the time).
_START = '{"start_time":"'
_MILLIS = tuple(f'.{ms:03d}Z","duration":' for ms in range(1000))


def _text(value: bytes | None) -> str:
    """A header value a client sent, as a JSON string (escaped), or null."""
    return _quote(value.decode("latin-1")) if value is not None else "null"


def _string(value: str | None) -> str:
    """An address, a name or a principal as a JSON string (escaped: a principal comes from a client
    certificate, which a gateway's MUTUAL mode may take from any CA the operator trusts), or null when empty."""
    return _quote(value) if value else "null"


class LineFormat:
    """The access log lines of one proxy (its workload name ends every line)."""

    __slots__ = ("_workload", "_cached", "_endpoints", "_second", "_date")

    def __init__(self, workload: str) -> None:
        self._workload = _quote(workload)
        self._second = -1  # the last whole second formatted, and its text: most lines of a batch share it
        self._date = ""
        self._cached: dict[tuple, str] = {}
        # The endpoints the cache's keys name by id(): kept alive while their keys are, so that no other
        # endpoint can take the same id meanwhile.
        self._endpoints: list[Any] = []

    def line(self, entry: tuple) -> bytes:
        return self.lines([entry])

    def lines(self, entries: list[tuple]) -> bytes:
        """The lines of a batch, as the bytes the access log writes (ASCII: every field is JSON-escaped):
        compiled when the helpers are built (the same bytes; their new fields written in C into one buffer, the
        cached rest from this formatter's `_rest`), else `python_lines`."""
        if _speedups is not None:
            return _speedups.format_lines(self, entries)
        return self.python_lines(entries)

    def python_lines(self, entries: list[tuple]) -> bytes:
        """`lines` in pure Python. Everything is written out in this loop, the start time too, and each
        line's pieces go to one list, joined once: a call or a string built per line would cost a tenth of
        a line each."""
        cached = self._cached
        second, date = self._second, self._date
        out: list[str] = []
        for (wall, duration_s, direction, method, path, status, flag, received, sent, endpoint, cluster, principal,
             remote, trace, authority, request_id, user_agent) in entries:
            key = (method, path, status, flag, received, sent, id(endpoint), cluster, authority, user_agent, remote,
                   principal, direction)
            rest = cached.get(key) or self._rest(key, endpoint)
            sec = int(wall)
            if sec != second:  # `2026-11-26T04:00:00`, then `.123Z` (milliseconds truncated, as Envoy's)
                second, date = sec, _strftime("%Y-%m-%dT%H:%M:%S", _gmtime(sec))
            out += (_START, date, _MILLIS[int((wall - sec) * 1000)], f"{int(duration_s * 1000)}",
                    ',"request_id":', _quote(request_id.decode("latin-1")) if request_id is not None else "null",
                    ',"trace_id":', f'"{trace[0].decode()}",' if trace else "null,", rest)  # a tracing.Span
        self._second, self._date = second, date
        return "".join(out).encode()

    def _rest(self, key: tuple, endpoint: Any) -> str:
        """Every field but the four new ones, formatted once per distinct set of values."""
        (method, path, status, flag, received, sent, _, cluster, authority, user_agent, remote, principal,
         direction) = key
        host = f"{endpoint.address}:{endpoint.port}" if endpoint is not None else None
        text = (f'"method":"{method}","path":{_quote(path)},"protocol":"HTTP/1.1","response_code":{status},'
                f'"response_flags":"{flag}","bytes_received":{received},"bytes_sent":{sent},'
                f'"upstream_host":{_string(host)},"upstream_cluster":{_string(cluster)},'
                f'"authority":{_text(authority)},"user_agent":{_text(user_agent)},'
                f'"downstream_remote_address":{_string(remote)},"downstream_peer_principal":{_string(principal)},'
                f'"direction":{_quote(direction)},"workload":{self._workload}}}\n')
        if len(text) > MAX_CACHED_TEXT:
            return text
        if len(self._cached) >= MAX_CACHED:
            self._cached.clear()
            self._endpoints.clear()
        self._cached[key] = text
        self._endpoints.append(endpoint)
        return text
