"""Hostile HTTP against a real sidecar process (issue 8): the vectors over a real socket, and a slowloris of
many connections that never stops a normal client from being served.

One sidecar (`python -m mesh.proxy --bootstrap`, bench.sidecar's inbound view) in front of a recording
upstream (bench.hostile_probe), with short client timeouts so the slow-client checks take seconds.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from bench import hostile_probe, processes, sidecar
from bench.hostile_vectors import BODY_LIMIT, BY_NAME, FORWARDED
from tests.e2e.conftest import DIRECT
from tests.e2e.observe import SERVED_WITHIN_S, metric, report

pytestmark = pytest.mark.e2e

HEADERS_TIMEOUT_S = 3.0
FLAGS = ("--request-headers-timeout", str(HEADERS_TIMEOUT_S), "--request-body-timeout", "1",
         "--idle-timeout", "3", "--max-request-body-bytes", str(BODY_LIMIT), "--access-log", "off")
SLOWLORIS_CONNECTIONS = 200
# The vectors sent over a real socket: one or two of each kind (all of them run over mock transports).
OVER_A_SOCKET = ("cl-te", "cl-duplicate-differ", "te-gzip-chunked", "chunk-size-invalid", "obs-fold",
                 "space-before-colon", "bare-lf", "nul-in-value", "connect", "http20-request-line",
                 "host-duplicate", "expect-unknown", "header-bytes", "body-over-limit-chunked", "absolute-form",
                 "expect-100-continue", "upgrade-then-request", "pipelined", "connection-nominates-header")


class Proxy:
    def __init__(self, car: sidecar.Sidecar, upstream: hostile_probe.RecordingUpstream) -> None:
        self.port = car.inbound_port
        self.admin = car.admin_port
        self.upstream = upstream

    def counter(self, name: str, *labels: str) -> float:
        with DIRECT.open(f"http://127.0.0.1:{self.admin}/stats/prometheus", timeout=5) as answer:
            return metric(answer.read().decode(), f"weir_{name}", *labels)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Iterator[Proxy]:
    workdir = tmp_path_factory.mktemp("hostile")
    upstream = hostile_probe.RecordingUpstream()
    upstream.start()
    try:
        with processes.Processes(workdir) as procs:
            car = sidecar.start(procs, "hostile", sidecar.inbound_view(upstream.port), workdir, cpus=[], extra=FLAGS)
            yield Proxy(car, upstream)
    finally:
        upstream.stop()


@pytest.mark.parametrize("name", OVER_A_SOCKET)
def test_vector_over_a_real_socket(proxy, name):
    vector = BY_NAME[name]
    code = str(vector.expect)
    before = proxy.counter("downstream_rq_rejected_total", f'code="{code}"')
    refused = vector.expect != FORWARDED
    result = hostile_probe.probe(proxy.port, vector.data, proxy.upstream,
                                 finals=1 if refused else vector.requests, closes=refused)
    if not refused:
        assert len(result.upstream) == vector.requests, result.describe()
        assert all(f.upgrade is False and f.framing in ("no body", "CL 3", "TE chunked") for f in result.upstream)
        assert [s for s in result.statuses if s != 100] == [200] * vector.requests, result.describe()
    else:
        assert result.statuses == [vector.expect] and result.closed, result.describe()
        assert result.upstream == [], "a refused request reaches no upstream"
        assert proxy.counter("downstream_rq_rejected_total", f'code="{code}"') == before + 1


def get(port: int) -> tuple[bytes, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /normal HTTP/1.1\r\nHost: up:9080\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic() - started


def test_a_slowloris_of_many_connections_does_not_stop_a_normal_client(proxy):
    timeouts_before = proxy.counter("downstream_rq_header_timeout_total")
    baseline = get(proxy.port)[1]
    loris = []
    first = time.monotonic()
    for _ in range(SLOWLORIS_CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: up:9080\r\n")
        loris.append(sock)
    try:
        served = []
        deadline = first + HEADERS_TIMEOUT_S * 0.8
        dripped = 0.0
        while time.monotonic() < deadline or not served:  # while the slow connections are held open
            if time.monotonic() - dripped > 0.25:  # a header line now and then: never the end of the head
                dripped = time.monotonic()
                for sock in loris[::20]:
                    sock.sendall(b"X-Drip: 1\r\n")
            served.append(get(proxy.port))
        slowest = max(seconds for _, seconds in served)
        report("slowloris", connections=SLOWLORIS_CONNECTIONS, normal_gets=len(served),
               normal_get_s=f"{baseline:.3f}->{slowest:.3f}")
        assert served and all(data.startswith(b"HTTP/1.1 200") for data, _ in served)
        assert slowest < SERVED_WITHIN_S
        answers = []
        for sock in loris:  # each slow connection gets 408 at the headers deadline, then is closed
            sock.settimeout(HEADERS_TIMEOUT_S + 5)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            answers.append(data[:12])
        assert answers == [b"HTTP/1.1 408"] * SLOWLORIS_CONNECTIONS
    finally:
        for sock in loris:
            sock.close()
    assert proxy.counter("downstream_rq_header_timeout_total") - timeouts_before == SLOWLORIS_CONNECTIONS
    assert get(proxy.port)[0].startswith(b"HTTP/1.1 200")
    assert all(f.line != "GET /slow" for f in proxy.upstream.requests)


def test_an_idle_keep_alive_connection_is_closed_and_counted(proxy):
    before = proxy.counter("downstream_cx_idle_timeout_total")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /idle HTTP/1.1\r\nHost: up:9080\r\n\r\n")
        started = time.monotonic()
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and 2.5 < time.monotonic() - started < 8
    assert proxy.counter("downstream_cx_idle_timeout_total") == before + 1
