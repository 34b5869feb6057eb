"""bench.hostile's table helpers and catalogue, without processes (the run itself is `python -m bench.hostile`)."""

from __future__ import annotations

import socket
import threading
import time

from bench import hostile, hostile_probe
from bench.hostile_vectors import BY_NAME, FORWARDED, VECTORS


def test_vector_names_are_unique_and_groups_are_all_rendered():
    assert len(BY_NAME) == len(VECTORS)
    assert {v.group for v in VECTORS} == set(hostile.GROUPS)
    assert all(v.expect == FORWARDED or 400 <= v.expect < 600 for v in VECTORS)


def test_escape_shows_control_bytes_and_elides_long_requests():
    assert hostile.escape(b"GET /\r\nX: \x00|`\r\n") == "`GET /\\r\\nX: \\x00\\|\\`\\r\\n`"
    long = hostile.escape(b"a" * 1000)
    assert long.endswith("(1000 bytes)`") and len(long) < 200


def test_a_result_says_what_the_client_got_and_what_reached_the_upstream():
    refused = hostile_probe.Result([400], closed=True, received=80)
    assert refused.describe() == "400, closed → nothing"
    forwarded = hostile_probe.Result([100, 200], received=60,
                                     upstream=[hostile_probe.Forwarded("POST /", "CL 3")])
    assert forwarded.describe() == "100 + 200 → `POST /` CL 3"
    retried = hostile_probe.Result([502], received=60, upstream=[hostile_probe.Forwarded("junk", "?")] * 2)
    assert retried.describe() == "502 → junk (tried twice)"


def test_statuses_are_read_from_pipelined_responses():
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 400 Bad Request\r\n\r\n"
    assert hostile_probe.statuses(data) == [100, 200, 400]


class _Upstream:
    requests: list = []


def _late_answers(*steps: bytes | float | None) -> int:
    """A server for one connection that plays `steps` after the request: bytes are sent, a float is a
    pause, None closes. The port it listens on."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            for step in steps:
                if step is None:
                    break
                if isinstance(step, float):
                    time.sleep(step)
                else:
                    conn.sendall(step)
            else:
                conn.recv(65536)  # hold the connection open until the probe closes it
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def test_a_probe_waits_for_the_answers_it_expects_however_late(monkeypatch):
    monkeypatch.setattr(hostile_probe, "QUIET_S", 0.05)  # a loaded machine: answers further apart than this
    port = _late_answers(b"HTTP/1.1 100 Continue\r\n\r\n", 0.2, OK, 0.2, OK)
    result = hostile_probe.probe(port, b"GET / HTTP/1.1\r\n\r\n", _Upstream(), finals=2)
    assert (result.statuses, result.closed) == ([100, 200, 200], False)


def test_a_probe_expecting_a_close_reads_until_it(monkeypatch):
    monkeypatch.setattr(hostile_probe, "QUIET_S", 0.05)
    port = _late_answers(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n", 0.2, None)
    result = hostile_probe.probe(port, b"GET / HTTP/1.1\r\n\r\n", _Upstream(), closes=True)
    assert (result.statuses, result.closed) == ([400], True)
