"""Probes: validation of the annotation's `probes`, sending one for real on loopback, and judging."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from mesh.local import probes
from mesh.local.probes import Probe, ProbeResult


@pytest.mark.parametrize(("data", "message"), [
    ({"via": "ui-v1", "direct": "books-v1", "path": "/", "status": 200}, "exactly one of `via`"),
    ({"path": "/", "status": 200}, "exactly one of `via`"),
    ({"via": "ui-v1", "path": "/books", "status": 200}, "absolute http:// `url`"),
    ({"direct": "books-v1", "path": "books", "status": 200}, "starting with /"),
    ({"direct": "books-v1", "path": "/", "status": 200, "refused": True}, "exactly one of `status`"),
    ({"direct": "books-v1", "path": "/"}, "exactly one of `status`"),
    ({"direct": "books-v1", "path": "/", "status": 200, "extra": 1}, "extra"),
])
def test_invalid_probe_is_refused(data, message):
    with pytest.raises(ValidationError, match=message):
        Probe.model_validate(data)


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = f"{self.path} host={self.headers['Host']}".encode()
        self.send_response(403)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echo():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_via_probe_sends_absolute_form_through_the_outbound_port(echo):
    probe = Probe(via="ui-v1", url="http://books.bookinfo:9080/books", status=403)
    result = probes.send(probe, {"ui-v1": {"inbound": 1, "outbound": echo}})
    assert result.status == 403
    assert result.body == "http://books.bookinfo:9080/books host=books.bookinfo:9080"


def test_direct_probe_sends_the_path_to_the_inbound_port(echo):
    result = probes.send(Probe(direct="books-v1", path="/books", status=403), {"books-v1": {"inbound": echo}})
    assert (result.status, result.body) == (403, "/books host=books-v1")


def test_a_connection_closed_without_an_answer_is_no_status():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def close_at_once() -> None:
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.close()

    threading.Thread(target=close_at_once, daemon=True).start()
    result = probes.send(Probe(direct="books-v1", path="/", refused=True), {"books-v1": {"inbound": port}})
    listener.close()
    assert result.status is None and result.error


def test_unknown_workload_is_an_error_result():
    result = probes.send(Probe(direct="nope-v1", path="/", refused=True), {})
    assert result.status is None and "nope-v1" in result.error


@pytest.mark.parametrize(("probe", "result", "failures"), [
    (Probe(direct="b", path="/", refused=True), ProbeResult(None, error="reset"), 0),
    (Probe(direct="b", path="/", refused=True), ProbeResult(200, "ok"), 1),
    (Probe(direct="b", path="/", status=403, body="RBAC: access denied"), ProbeResult(403, "RBAC: access denied\n"), 0),
    (Probe(direct="b", path="/", status=403, body="RBAC: access denied"), ProbeResult(403, "nope"), 1),
    (Probe(direct="b", path="/", status=403), ProbeResult(200, "x"), 1),
    (Probe(direct="b", path="/", status=200), ProbeResult(None, error="refused"), 1),
])
def test_check(probe, result, failures):
    assert len(probes.check([probe], [result])) == failures


def test_check_wants_one_result_per_probe():
    assert probes.check([Probe(direct="b", path="/", status=200)], []) == ["probes: 0 results for 1 probes"]
