"""The admin endpoint: readiness latch, config dumps, Prometheus text that a scraper accepts."""

from __future__ import annotations

import json
import random
import re

import pytest

from mesh.proxy import admin, runtime, server, stats
from mesh.view import model
from tests.mesh.proxy.fakes import GW, FakeNetwork, FakeTransport, bookinfo_view, parse_responses

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
LABELS = rf"\{{(?:[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE})(?:,[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE})*\}}"
NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?Inf|NaN"
SAMPLE = re.compile(rf"({NAME})({LABELS})? ({NUMBER})")
COMMENT = re.compile(rf"# (?:TYPE {NAME} (?:counter|gauge|histogram|summary|untyped)|HELP {NAME} .*)")


def gateway_server() -> server.ProxyServer:
    identity = runtime.Identity("gw", "gateway", "weir-system", "istio-ingressgateway", {"istio": "ingressgateway"})
    return server.ProxyServer(runtime.ProxyRuntime(identity, random.Random(1)), bind="127.0.0.1")


def status(proxy: server.ProxyServer, target: str, method: str = "GET") -> tuple[int, bytes]:
    code, _, body = proxy.admin.dispatch(method, target)
    return code, body


async def test_ready_is_a_latch_released_by_the_first_view_and_closed_by_draining():
    proxy = gateway_server()
    assert status(proxy, "/ready") == (503, b"PRE_INITIALIZING\n")
    await proxy.apply_view(model.ProxyView(proxy="gw"), "v1")
    assert status(proxy, "/ready") == (200, b"LIVE\n")
    await proxy.shutdown()
    assert status(proxy, "/ready") == (503, b"DRAINING\n")


async def test_config_dump_whole_and_by_resource():
    proxy = server.ProxyServer(runtime.ProxyRuntime(GW, random.Random(1)), bind="127.0.0.1")
    proxy.runtime.apply(bookinfo_view(), "v7")
    code, body = status(proxy, "/config_dump")
    dump = json.loads(body)
    assert code == 200 and dump["proxy"]["version"] == "v7" and dump["proxy"]["view"]["proxy"] == "gw-v1.bookinfo"
    code, body = status(proxy, "/config_dump?resource=routes")
    assert code == 200
    assert [t["name"] for t in json.loads(body)] == ["9080"]
    assert json.loads(body)[0]["virtual_hosts"][0]["domains"][0] == "books"
    assert [c["name"] for c in json.loads(status(proxy, "/config_dump?resource=clusters")[1])][0].startswith(
        "outbound|9080||books")
    assert status(proxy, "/config_dump?resource=listeners_bound") == (200, b"[]")
    assert status(proxy, "/config_dump?resource=secrets")[0] == 400


def test_config_dump_before_any_view():
    a = admin.Admin()
    a.register_dump("proxy", lambda: {"view": None})
    assert a.dispatch("GET", "/config_dump?resource=routes") == (200, "application/json", b"[]")


def test_unknown_path_is_404_and_a_failing_handler_is_500():
    a = admin.Admin()
    a.handle("GET", "/boom", lambda query: 1 / 0)
    assert a.dispatch("GET", "/nope")[0] == 404
    assert a.dispatch("POST", "/ready")[0] == 404
    assert a.dispatch("GET", "/boom")[0] == 500
    assert b"GET /ready" in a.dispatch("GET", "/")[2]


def check_exposition(text: str) -> list[re.Match]:
    assert text.endswith("\n")
    samples = []
    for line in text.splitlines():
        if line.startswith("#"):
            assert COMMENT.fullmatch(line), line
        else:
            match = SAMPLE.fullmatch(line)
            assert match, line
            samples.append(match)
    return samples


def test_prometheus_text_is_valid_and_consistent():
    rt = runtime.ProxyRuntime(GW, random.Random(1))
    rt.apply(bookinfo_view(), "v1")
    spoofed = rt._inbound_peer('ns;wl"x\\y\nz;app;v1;svc')  # label values from a header must be escaped
    rt.stats.record(spoofed, 200, "-", 3.0)
    peer = rt.source_peer(rt.view.clusters[next(iter(rt.view.clusters))].spec, None)
    for ms in (0.2, 7.0, 7.0, 400_000.0, 5_000_000.0):
        rt.stats.record(peer, 503, "UH", ms)
    rt.counters.inc("upstream_connect_fail_total")
    rt.counters.inc("downstream_rq_rejected_total", 1_234_567, code="400")
    rt.counters.gauge("connections_active", lambda: 3)
    proxy = server.ProxyServer(rt, bind="127.0.0.1")
    code, content_type, body = proxy.admin.dispatch("GET", "/stats/prometheus")
    assert (code, content_type) == (200, "text/plain; version=0.0.4")
    samples = check_exposition(body.decode())
    values = {(m[1], m[2] or ""): m[3] for m in samples}
    assert values[("weir_downstream_rq_rejected_total", '{code="400"}')] == "1234567"
    assert values[("weir_connections_active", "")] == "3"
    uh = [m for m in samples if 'response_flags="UH"' in (m[2] or "")]
    buckets = [float(m[3]) for m in uh if m[1] == "istio_request_duration_milliseconds_bucket"]
    assert buckets == sorted(buckets) and buckets[-1] == 5
    assert [float(m[3]) for m in uh if m[1] == "istio_requests_total"] == [5]
    # duration, request bytes, response bytes: one histogram each, five requests in each
    assert [float(m[3]) for m in uh if m[1].endswith("_count")] == [5, 5, 5]
    assert [m[1] for m in uh if m[1].endswith("_count")] == [
        "istio_request_duration_milliseconds_count", "istio_request_bytes_count", "istio_response_bytes_count"]


@pytest.mark.parametrize("line", ['x{a="1"} 1', "x 1.5e+06", 'x{a="q\\"b"} +Inf', "# TYPE x counter"])
def test_the_exposition_check_accepts_valid_lines(line):
    check_exposition(line + "\n")


@pytest.mark.parametrize("line", ['x{a="1} 1', "x 1,5", 'x{a="1",} 1', "1x 1", "# TYPE x bogus"])
def test_the_exposition_check_refuses_invalid_lines(line):
    with pytest.raises(AssertionError):
        check_exposition(line + "\n")


async def test_admin_connection_answers_one_request_and_closes():
    """The health port is on the pod network: a peer pipelining requests it never reads gets one answer."""
    a = admin.Admin()
    conn = admin._AdminConnection(a)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    (answer,) = parse_responses(transport.data)
    assert (answer.first, answer.body, answer.header("connection")) == ("503", b"PRE_INITIALIZING\n", "close")
    assert transport.closed
    conn.data_received(b"GET / HTTP/1.1\r\n\r\n")  # late bytes: ignored
    assert len(parse_responses(transport.data)) == 1
    bad = admin._AdminConnection(a)
    bad_transport = FakeTransport()
    bad.connection_made(bad_transport)
    bad.data_received(b"\x00\x01 nonsense\r\n\r\n")
    assert parse_responses(bad_transport.data)[0].first == "400" and bad_transport.closed


async def test_an_admin_connection_without_a_whole_request_is_closed_after_the_timeout():
    clock = FakeNetwork()
    conn = admin._AdminConnection(admin.Admin(), loop=clock)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(b"GET /ready HTTP/1.1\r\n")
    clock.advance(admin.ADMIN_REQUEST_TIMEOUT_S - 0.1)
    assert not transport.closed
    clock.advance(0.2)
    assert transport.closed and transport.data == b""


def test_stats_label_names_are_istios():
    assert {"reporter", "source_workload", "destination_workload", "destination_service", "response_code",
            "response_flags", "connection_security_policy"} <= set(stats.PEER_LABELS + stats.RESPONSE_LABELS)


def test_config_and_connection_gauges_and_a_rejected_view_is_counted():
    import asyncio
    import dataclasses

    rt = runtime.ProxyRuntime(GW, random.Random(1))
    proxy = server.ProxyServer(rt, bind="127.0.0.1")

    def metric(name: str) -> float:
        text = proxy.admin.dispatch("GET", "/stats/prometheus")[2].decode()
        return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), -1.0)

    assert metric("weir_config_last_applied_timestamp_seconds") == 0.0
    rt.apply(bookinfo_view(), "v1")
    assert metric("weir_config_applied_total") == 1 and metric("weir_config_last_applied_timestamp_seconds") > 0
    assert metric("weir_upstream_cx_active") == 0 and metric("weir_downstream_cx_active") == 0
    broken = dataclasses.replace(bookinfo_view(), clusters=())  # routes name clusters it no longer has
    with pytest.raises(model.ViewError):
        asyncio.run(proxy.apply_view(broken, "v2"))
    assert metric("weir_config_rejected_total") == 1 and metric("weir_config_applied_total") == 1


async def test_an_endless_request_target_is_414_not_kept():
    proxy = gateway_server()
    connection = admin._AdminConnection(proxy.admin)
    transport = FakeTransport()
    connection.connection_made(transport)
    connection.data_received(b"GET /")
    for _ in range(64):  # 4 MiB in 64 KiB reads
        if transport.closed:
            break
        connection.data_received(b"a" * 65536)
    assert transport.closed and len(connection.url) <= admin.MAX_ADMIN_URL_BYTES + 65536
    (answer,) = parse_responses(transport.data)
    assert answer.first == "414"
