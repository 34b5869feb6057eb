"""Per-request telemetry (mesh.proxy.telemetry) with fake exchanges, a fake loop that records timers and
tasks, a BytesIO access log and a frozen wall clock: nothing written before the flush, one JSON line per
request after it, bounded pending lists that count what they drop, and spans exported only for sampled
traces to the exporters there are."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import os
import random
from types import SimpleNamespace

import pytest

from mesh.proxy import log_writer, stats, telemetry, tracing
from mesh.proxy.matching import RequestHead
from mesh.view import model
from tests.mesh.proxy.test_log_writer import read_all

T = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SPAN = "b7ad6b7169203331"
CLUSTER = "outbound|9080|v1|books.bookinfo.svc.cluster.local"
PRINCIPAL = "spiffe://cluster.local/ns/bookinfo/sa/gw"
BASE = int(datetime.datetime(2026, 11, 26, 4, 0, tzinfo=datetime.UTC).timestamp())
START = BASE + 0.125  # binary fractions: exact in a float
DURATION = 0.25
NOW = START + DURATION
SAMPLED = (T.encode(), PARENT.encode(), True, SPAN.encode(), False)  # a tracing.Span: ids as ASCII bytes


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list[tuple[float, object]] = []
        self.tasks: list = []

    def call_later(self, delay, callback, *args):
        self.timers.append((delay, callback))
        return SimpleNamespace(cancel=lambda: None)

    def call_soon(self, callback, *args):
        self.timers.append((0.0, callback))
        return SimpleNamespace(cancel=lambda: None)

    def create_task(self, coro):
        self.tasks.append(coro)
        return coro

    def fire(self) -> None:
        timers, self.timers = self.timers, []
        for _, callback in timers:
            callback()

    def run_tasks(self) -> None:
        tasks, self.tasks = self.tasks, []
        for coro in tasks:
            asyncio.run(coro)


class BrokenStream(io.BytesIO):
    def write(self, data: bytes) -> int:
        raise OSError(28, "No space left on device")


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    monkeypatch.setattr(telemetry, "time", SimpleNamespace(time=lambda: NOW))


def exchange(path: str = "/books?id=1", *, trace=SAMPLED, status: int = 200,
             upstream: bool = True, headers: list | None = None) -> SimpleNamespace:
    if headers is None:
        headers = [(b"host", b"books:9080"), (b"x-request-id", b"req-1"), (b"user-agent", b"curl/8")]
    target = SimpleNamespace(endpoint=model.Endpoint("127.0.0.1", 21031),
                             cluster=SimpleNamespace(spec=SimpleNamespace(name=CLUSTER))) if upstream else None
    return SimpleNamespace(target=target, trace=trace, head=RequestHead("GET", path, "books", 9080, headers),
                           method="GET", status=status, flag="-", body_size=7, bytes_sent=512,
                           conn=SimpleNamespace(peer_identity=PRINCIPAL, peer_ip="10.0.0.9"), host_header=b"books:9080",
                           request_id=None, user_agent=None)  # None: as answered locally, the head is scanned


def make(stream=None, exporters=(), tracer=None, workload="gw-v1"):
    loop, counters = FakeLoop(), stats.Counters()
    tel = telemetry.Telemetry(workload, loop, counters, tracer=tracer, stream=stream, exporters=exporters)
    return tel, loop, counters


def lines(stream: io.BytesIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- access log -------------------------------------------------------------------------------------------------

def test_nothing_is_written_until_the_flush():
    stream = io.BytesIO()
    tel, loop, _ = make(stream)
    tel.record(exchange(), "outbound", DURATION)
    tel.record(exchange("/other"), "outbound", DURATION)
    assert stream.getvalue() == b""
    assert [delay for delay, _ in loop.timers] == [telemetry.FLUSH_S]  # one timer for the batch
    loop.fire()
    assert [line["path"] for line in lines(stream)] == ["/books?id=1", "/other"]
    assert stream.getvalue().count(b"\n") == 2 and loop.timers == []  # nothing left: no new timer


def test_an_access_log_line_has_envoys_fields():
    stream = io.BytesIO()
    tel, loop, _ = make(stream)
    tel.record(exchange(), "outbound", DURATION)
    loop.fire()
    assert lines(stream) == [{
        "start_time": "2026-11-26T04:00:00.125Z", "method": "GET", "path": "/books?id=1", "protocol": "HTTP/1.1",
        "response_code": 200, "response_flags": "-", "bytes_received": 7, "bytes_sent": 512, "duration": 250,
        "upstream_host": "127.0.0.1:21031", "upstream_cluster": CLUSTER, "authority": "books:9080",
        "request_id": "req-1", "trace_id": T, "user_agent": "curl/8", "downstream_remote_address": "10.0.0.9",
        "downstream_peer_principal": PRINCIPAL, "direction": "outbound", "workload": "gw-v1"}]


def test_a_forwarded_request_logs_the_ids_noted_as_its_head_was_built():
    stream = io.BytesIO()
    tel, loop, _ = make(stream)
    forwarded = exchange(headers=[(b"host", b"books:9080")])
    forwarded.request_id, forwarded.user_agent = b"generated-1", b'agent "quoted"'
    tel.record(forwarded, "outbound", DURATION)
    loop.fire()
    (line,) = lines(stream)
    assert (line["request_id"], line["user_agent"]) == ("generated-1", 'agent "quoted"')


def test_a_local_answer_without_upstream_or_trace_or_request_id():
    stream = io.BytesIO()
    tel, loop, _ = make(stream)
    tel.record(exchange(trace=None, upstream=False, status=404, headers=[]), "inbound", 0.0)
    loop.fire()
    line = lines(stream)[0]
    assert line["upstream_host"] is None and line["upstream_cluster"] is None
    assert line["request_id"] is None and line["trace_id"] is None and line["user_agent"] is None
    assert line["response_code"] == 404 and line["duration"] == 0 and line["start_time"] == "2026-11-26T04:00:00.375Z"


def test_no_stream_no_access_log_but_recent_lines_stay():
    tel, loop, _ = make(stream=None)
    tel.record(exchange(), "outbound", DURATION)
    assert [d["path"] for d in tel.recent_dicts(5)] == ["/books?id=1"]  # waiting: formatted for the answer
    loop.fire()
    assert tel.logs == [] and loop.timers == [] and tel.recent_lines == 1
    assert [d["path"] for d in tel.recent_dicts(5)] == ["/books?id=1"]


def test_with_telemetry_off_nothing_is_kept_not_even_recent_entries():
    """`--telemetry off` is metrics only: no access log, no spans, and no recent entries for `/access_log`."""
    loop, counters = FakeLoop(), stats.Counters()
    tel = telemetry.Telemetry("gw-v1", loop, counters, stream=None, keep_recent=False)
    assert not tel.recording  # so the proxy never calls `record` (the next test)
    assert tel.recent_dicts(5) == [] and tel.logs == [] and tel.spans == [] and loop.timers == []


async def test_a_proxy_with_telemetry_off_never_calls_record(monkeypatch):
    from tests.mesh.proxy.fakes import Proxy, bookinfo_view, settle

    proxy = Proxy(bookinfo_view())
    proxy.runtime.telemetry = telemetry.Telemetry("gw-v1", FakeLoop(), proxy.runtime.counters, stream=None,
                                                  keep_recent=False)
    monkeypatch.setattr(telemetry.Telemetry, "record", lambda *args: pytest.fail("record was called"))
    client = proxy.client()
    client.send(b"GET /books HTTP/1.1\r\nHost: books:9080\r\n\r\n")
    await settle()
    (upstream,) = proxy.net.upstreams
    upstream.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    await settle()
    assert client.transport.data.startswith(b"HTTP/1.1 200")


def test_the_proxy_flag_telemetry_off_builds_a_telemetry_that_records_nothing():
    from mesh.proxy import __main__ as proxy_main

    args = proxy_main.parse_args(["--id", "x", "--workload", "w", "--bootstrap", "view.json", "--telemetry", "off"])
    tel = proxy_main._telemetry(args, SimpleNamespace(counters=stats.Counters()), None, FakeLoop())
    assert not tel.recording and tel.stream is None and tel.tracer is None


@pytest.mark.parametrize("formatted", [False, True])
def test_recent_dicts_newest_last_and_bounded(formatted):
    tel, loop, _ = make(io.BytesIO())
    for i in range(telemetry.RECENT + 5):
        tel.record(exchange(f"/r{i}"), "outbound", DURATION)
    while formatted and loop.timers:
        loop.fire()
    last = telemetry.RECENT + 4
    assert [d["path"] for d in tel.recent_dicts(3)] == [f"/r{last - 2}", f"/r{last - 1}", f"/r{last}"]
    everything = tel.recent_dicts(10_000)
    assert [d["path"] for d in everything] == [f"/r{i}" for i in range(5, last + 1)]
    assert tel.recent_dicts(0) == [] and tel.recent_dicts(-1) == []


def test_the_recent_text_is_bounded_to_the_slices_that_hold_the_last_lines():
    tel, loop, _ = make(io.BytesIO())
    for i in range(10 * telemetry.RECENT):
        tel.record(exchange(f"/r{i}"), "outbound", DURATION)
        loop.fire()  # a slice formatted whenever one is scheduled, the rest at each flush: slices of all sizes
    assert telemetry.RECENT <= tel.recent_lines < telemetry.RECENT + telemetry.FLUSH_SLICE
    assert tel.recent_lines == sum(count for _, count in tel.recent)
    assert tel.recent_lines - tel.recent[0][1] < telemetry.RECENT  # without the oldest slice: too few


def test_pending_log_lines_are_bounded_and_drops_counted(monkeypatch):
    monkeypatch.setattr(telemetry, "MAX_PENDING", 3)
    stream = io.BytesIO()
    tel, loop, counters = make(stream)
    for i in range(5):
        tel.record(exchange(f"/r{i}"), "outbound", DURATION)
    assert counters.get("telemetry_dropped_total", kind="access_log") == 2
    loop.fire()
    assert [line["path"] for line in lines(stream)] == ["/r0", "/r1", "/r2"]
    tel.record(exchange("/after"), "outbound", DURATION)  # room again after the flush
    loop.fire()
    assert lines(stream)[-1]["path"] == "/after" and counters.get("telemetry_dropped_total", kind="access_log") == 2


@pytest.mark.parametrize("broken", [BrokenStream, "closed"])
def test_a_failing_stream_counts_drops_and_does_not_raise(broken):
    stream = BrokenStream() if broken is BrokenStream else io.BytesIO()
    if broken == "closed":
        stream.close()  # write raises ValueError
    tel, loop, counters = make(stream)
    for _ in range(3):
        tel.record(exchange(), "outbound", DURATION)
    loop.fire()
    assert counters.get("telemetry_dropped_total", kind="access_log") == 3
    assert tel.logs == [] and loop.timers == []


# -- spans -------------------------------------------------------------------------------------------------------

class Collector:
    def __init__(self, fail: int = 0) -> None:
        self.batches: list[list[dict]] = []
        self.fail = fail

    async def __call__(self, spans):
        if self.fail:
            self.fail -= 1
            raise ConnectionError("collector down")
        self.batches.append(spans)


def test_spans_only_for_sampled_traces_and_only_with_exporters():
    collector = Collector()
    tel, loop, _ = make(exporters=(collector,))
    tel.record(exchange(trace=SAMPLED[:2] + (False,) + SAMPLED[3:]), "outbound", DURATION)
    tel.record(exchange(trace=None), "outbound", DURATION)  # no tracer: no trace
    assert tel.spans == []
    without, _, _ = make(exporters=())
    without.record(exchange(), "outbound", DURATION)
    assert without.spans == []
    tel.record(exchange(), "outbound", DURATION)
    assert len(tel.spans) == 1 and len(loop.timers) == 1  # one flush for the lines and the span


@pytest.mark.parametrize(("direction", "kind"), [("inbound", "SERVER"), ("outbound", "CLIENT")])
def test_the_export_task_sends_span_dicts(direction, kind):
    first, second = Collector(), Collector()
    tel, loop, counters = make(exporters=(first, second))
    tel.record(exchange(), direction, DURATION)
    loop.fire()
    assert len(loop.tasks) == 1 and first.batches == []  # nothing sent before the task runs
    loop.run_tasks()
    assert first.batches == second.batches and len(first.batches) == 1
    [span] = first.batches[0]
    start_ns = BASE * 10**9 + 125_000_000
    assert abs(span.pop("startTimeUnixNano") - start_ns) <= 1_000
    assert abs(span.pop("endTimeUnixNano") - (start_ns + 250_000_000)) <= 1_000
    assert span == {
        "traceId": T, "spanId": SPAN, "parentSpanId": PARENT, "name": "books:9080/books", "kind": kind,
        "attributes": {"workload": "gw-v1", "direction": direction, "http.method": "GET", "http.url": "/books?id=1",
                       "http.status_code": 200, "response_flags": "-", "upstream_cluster": CLUSTER,
                       "guid:x-request-id": "req-1", "peer.address": "127.0.0.1:21031",
                       "downstream_peer_principal": PRINCIPAL}}
    assert counters.get("spans_exported_total") == 2  # once per exporter
    assert loop.timers == [] and not tel._exporting


def test_a_failing_exporter_costs_its_batch_and_the_next_flush_still_exports():
    collector = Collector(fail=1)
    tel, loop, counters = make(exporters=(collector,))
    for _ in range(3):
        tel.record(exchange(), "outbound", DURATION)
    loop.fire()
    loop.run_tasks()  # must not raise
    assert counters.get("telemetry_dropped_total", kind="span") == 3 and collector.batches == []
    tel.record(exchange("/next"), "outbound", DURATION)
    loop.fire()
    loop.run_tasks()
    assert [[s["name"] for s in batch] for batch in collector.batches] == [["books:9080/next"]]
    assert counters.get("spans_exported_total") == 1


def test_one_export_at_a_time_in_batches(monkeypatch):
    monkeypatch.setattr(telemetry, "EXPORT_BATCH", 2)
    collector = Collector()
    tel, loop, _ = make(exporters=(collector,))
    for i in range(5):
        tel.record(exchange(f"/r{i}"), "outbound", DURATION)
    loop.fire()
    assert len(loop.tasks) == 1 and loop.timers == []  # the rest waits: the export re-arms when it is done
    loop.fire()
    assert len(loop.tasks) == 1  # still exporting: no second task
    loop.run_tasks()
    while loop.timers:
        loop.fire()
        loop.run_tasks()
    assert [[s["name"][len("books:9080/"):] for s in b] for b in collector.batches] == [
        ["r0", "r1"], ["r2", "r3"], ["r4"]]


def test_pending_spans_are_bounded(monkeypatch):
    monkeypatch.setattr(telemetry, "MAX_PENDING", 2)
    tel, _, counters = make(exporters=(Collector(),))
    for _ in range(5):
        tel.record(exchange(), "outbound", DURATION)
    assert len(tel.spans) == 2 and counters.get("telemetry_dropped_total", kind="span") == 3


def test_pending_spans_are_bounded_in_bytes_while_the_exporter_is_stalled(monkeypatch):
    """Callers forcing sampling with heads at the listener's limits, and an exporter that never answers: what
    waits, the batch being exported included, stays under MAX_PENDING_SPAN_BYTES, far fewer entries than
    MAX_PENDING; an export frees its share when it ends."""
    monkeypatch.setattr(telemetry, "MAX_PENDING_SPAN_BYTES", 1024 * 1024)
    tel, loop, counters = make(exporters=(Collector(),))
    big = [(b"user-agent", b"u" * 60_000), (b"x-request-id", b"r" * 1000)]
    for i in range(100):
        tel.record(exchange(f"/{i}" + "p" * 15_000, headers=big), "outbound", DURATION)
    kept = len(tel.spans)
    assert kept == 1024 * 1024 // (60_000 + 1000 + 15_000 + telemetry.ENTRY_BYTES + 10 + 2)
    assert tel.span_bytes == sum(map(telemetry.entry_bytes, tel.spans)) <= 1024 * 1024
    assert counters.get("telemetry_dropped_total", kind="span") == 100 - kept
    held = tel.span_bytes
    loop.fire()  # the export takes the batch; a stalled exporter holds it, so it still counts
    assert tel.spans == [] and tel.span_bytes == held
    tel.record(exchange("/while-exporting", headers=big), "outbound", DURATION)
    assert tel.spans == [] and counters.get("telemetry_dropped_total", kind="span") == 101 - kept
    loop.run_tasks()  # the export ends: there is room again
    assert tel.span_bytes == 0
    tel.record(exchange("/after", headers=big), "outbound", DURATION)
    assert len(tel.spans) == 1 and counters.get("telemetry_dropped_total", kind="span") == 101 - kept


def test_a_locally_answered_request_gets_a_trace_from_the_tracer():
    stream, collector = io.BytesIO(), Collector()
    tel, loop, _ = make(stream, exporters=(collector,), tracer=tracing.Tracer(100.0, random.Random(5)))
    expected_trace, _, _, expected_span, _ = (part.decode() if isinstance(part, bytes) else part
                                              for part in tracing.Tracer(100.0, random.Random(5)).start([]))
    tel.record(exchange(trace=None, upstream=False), "inbound", DURATION)
    caller = [(b"traceparent", f"00-{T}-{PARENT}-01".encode())]
    tel.record(exchange(trace=None, upstream=False, headers=caller), "inbound", DURATION)
    loop.fire()
    loop.run_tasks()
    assert [line["trace_id"] for line in lines(stream)] == [expected_trace, T]
    root, joined = collector.batches[0]
    assert (root["traceId"], root["spanId"], root["parentSpanId"]) == (expected_trace, expected_span, "")
    assert (joined["traceId"], joined["parentSpanId"]) == (T, PARENT)
    assert root["attributes"]["peer.address"] is None and root["attributes"]["upstream_cluster"] is None


class KeepingStream(io.BytesIO):
    """Keeps what is written until it is flushed, as `log_writer.ThreadedWriter` does (its thread wakes then)."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[bytes] = []
        self.flushes = 0

    def write(self, data: bytes) -> int:
        self.kept.append(data)
        return len(data)

    def flush(self) -> None:
        if self.kept:
            self.flushes += 1
            super().write(b"".join(self.kept))
            self.kept = []


def fire_soon(loop: FakeLoop) -> None:
    """Run the callbacks scheduled with call_soon; the timers stay."""
    soon = [callback for delay, callback in loop.timers if delay == 0.0]
    loop.timers = [(delay, callback) for delay, callback in loop.timers if delay != 0.0]
    for callback in soon:
        callback()


def test_a_slice_is_formatted_as_soon_as_it_waits_and_handed_over_at_the_flush():
    stream = KeepingStream()
    tel, loop, _ = make(stream)
    for i in range(telemetry.FLUSH_SLICE - 1):
        tel.record(exchange(f"/r{i}"), "outbound", DURATION)
    assert [delay for delay, _ in loop.timers] == [telemetry.FLUSH_S]  # a slice not whole yet: the flush only
    tel.record(exchange("/whole"), "outbound", DURATION)
    assert [delay for delay, _ in loop.timers] == [telemetry.FLUSH_S, 0.0]  # whole: formatted in its own callback
    for i in range(5):  # ended in the same loop iteration, before that callback runs
        tel.record(exchange(f"/late{i}"), "outbound", DURATION)
    fire_soon(loop)
    assert tel.logs == [] or len(tel.logs) < telemetry.FLUSH_SLICE
    assert b"".join(stream.kept).count(b"\n") == telemetry.FLUSH_SLICE and stream.getvalue() == b""
    assert [d["path"] for d in tel.recent_dicts(2)] == ["/late3", "/late4"]
    loop.fire()  # the flush: the rest formatted, then everything handed over at once
    paths = [line["path"] for line in lines(stream)]
    assert paths == [f"/r{i}" for i in range(telemetry.FLUSH_SLICE - 1)] + ["/whole"] + [f"/late{i}" for i in range(5)]
    assert stream.flushes == 1 and stream.kept == [] and loop.timers == []


def test_every_whole_slice_is_formatted_when_one_loop_iteration_ended_many_requests():
    stream = KeepingStream()
    tel, loop, _ = make(stream)
    for i in range(3 * telemetry.FLUSH_SLICE + 1):
        tel.record(exchange(f"/r{i}"), "outbound", DURATION)
    fire_soon(loop)
    assert len(tel.logs) == 1 and len(stream.kept) == 3 and stream.flushes == 0


def test_a_large_flush_is_cut_into_slices_served_between_requests(monkeypatch):
    monkeypatch.setattr(telemetry, "MAX_PENDING", 10 * telemetry.FLUSH_SLICE)
    stream = KeepingStream()
    tel, loop, _ = make(stream)
    for i in range(2 * telemetry.FLUSH_SLICE + 3):
        tel.record(exchange(f"/r{i}"), "outbound", DURATION)
    loop.timers = [(delay, callback) for delay, callback in loop.timers if delay != 0.0]  # as if not run yet
    slices = 0
    while loop.timers:
        loop.fire()
        slices += 1
    assert slices == 3 and stream.flushes == 1
    assert [line["path"] for line in lines(stream)] == [f"/r{i}" for i in range(2 * telemetry.FLUSH_SLICE + 3)]


def test_the_log_line_is_valid_json_whatever_the_client_sent():
    tel, _, _ = make()
    paths = ("/plain", '/quote"and\\back', "/uni\u00e9", "/ctl\x01")
    agents = ('a"b', "tab\there", "x\\y", "plain")
    for path, agent in zip(paths, agents, strict=True):
        head = [(b"host", b"books:9080"), (b"x-request-id", b'r"1'), (b"user-agent", agent.encode("latin-1"))]
        tel.record(exchange(path, headers=head), "inbound", DURATION)
    parsed = [json.loads(tel.log_line(entry)) for entry in tel.logs]
    assert [p["path"] for p in parsed] == list(paths) and [p["user_agent"] for p in parsed] == list(agents)
    assert {p["request_id"] for p in parsed} == {'r"1'} and parsed == [tel.entry_dict(e) for e in tel.logs]
    assert tel.recent_dicts(len(paths)) == parsed


def test_at_exit_the_lines_waiting_for_the_flush_are_written_before_close_returns():
    """A SIGTERM's drain finishes the last requests; their lines wait for a flush that would never come."""
    read_end, write_end = os.pipe()
    writer = log_writer.ThreadedWriter(write_end, stats.Counters())
    tel, loop, _ = make(writer)
    for i in range(telemetry.FLUSH_SLICE + 3):  # more than one slice, and more than a pipe holds
        tel.record(exchange(f"/r{i}"), "inbound", DURATION)
    read, reader = read_all(read_end)  # the container runtime, reading the proxy's stdout
    tel.close(timeout_s=60)
    assert not writer._thread.is_alive(), "close returns once the thread has written everything and ended"
    os.close(write_end)
    reader.join(10)
    paths = [json.loads(line)["path"] for line in read[0].splitlines()]
    assert paths == [f"/r{i}" for i in range(telemetry.FLUSH_SLICE + 3)]
    assert tel.logs == [] and tel._flush is None
