"""End to end through real sidecars: host resolution, ServiceEntry, hostile input, response flags."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.e2e


def sidecar_port(mesh, workload: str, kind: str) -> int:
    rows = {p["name"]: p for p in mesh.meshctl_json("status")["processes"]}
    return rows[f"{workload}.proxy"]["ports"][kind]


def via_sidecar(mesh, url: str, workload: str = "gw-v1") -> tuple[int, bytes]:
    """What an app of `workload` sees when it calls `url` (its sidecar is its HTTP proxy)."""
    proxy = f"http://127.0.0.1:{sidecar_port(mesh, workload, 'outbound')}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize("host", ["books", "books.bookinfo", "books.bookinfo.svc", "books.bookinfo.svc.cluster.local"])
def test_kubernetes_host_names_resolve_in_the_mesh(mesh, host):
    mesh.apply("all-v1")
    mesh.wait_synced()
    status, body = via_sidecar(mesh, f"http://{host}:9080/books")
    assert status == 200
    assert json.loads(body)["versions"] == {"books": "v1", "ratings": "v1"}


def test_unknown_host_is_passed_through_under_allow_any(mesh):
    status, body = via_sidecar(mesh, "http://no-such-host.invalid:9080/")
    assert status == 503 and b"connect" in body  # passthrough tried and failed: UF, not NR


class _External(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = json.dumps({"host": self.headers["Host"], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_service_entry_makes_an_outside_host_routable(mesh, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _External)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    entry = tmp_path / "external.yaml"
    entry.write_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: catalog, namespace: bookinfo}\n"
        "spec:\n  hosts: [catalog.example.org]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n"
        "  ports: [{number: 80, name: http, protocol: HTTP}]\n"
        f"  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: catalog, namespace: bookinfo}\n"
        "spec:\n  hosts: [catalog.example.org]\n  http:\n  - match: [{uri: {prefix: /old}}]\n"
        "    rewrite: {uri: /new}\n    route: [{destination: {host: catalog.example.org}}]\n"
        "  - route: [{destination: {host: catalog.example.org}}]\n"
    )
    try:
        mesh.meshctl("apply", "-f", str(entry))
        mesh.wait_synced()
        status, body = via_sidecar(mesh, "http://catalog.example.org/old/page")
        assert status == 200 and json.loads(body)["path"] == "/new/page"
        stats = mesh.meshctl("stats", "gw-v1").stdout
        assert 'destination_service="catalog.example.org"' in stats
    finally:
        mesh.meshctl("delete", "-f", str(entry))
        server.shutdown()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", b"414"),
        (b"\x00\x01garbage\r\n\r\n", b"400"),
    ],
    ids=["cl-and-te", "no-host", "header-too-large", "uri-too-long", "garbage"],
)
def test_malformed_requests_are_refused_and_the_connection_closed(mesh, request_bytes, status):
    port = int(mesh.ingress.rsplit(":", 1)[1])
    answer = raw(port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:100]
    assert b"connection: close" in answer.lower()
    assert mesh.get("/gateway/books")[0] == 200  # and the proxy is fine


def test_no_matching_route_is_404_with_flag_nr(mesh, tmp_path):
    only = tmp_path / "only.yaml"
    only.write_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: only, namespace: bookinfo}\n"
        "spec:\n  hosts: [only.example.org]\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: only, namespace: bookinfo}\n"
        "spec:\n  hosts: [only.example.org]\n  http:\n  - match: [{uri: {exact: /only}}]\n"
        "    route: [{destination: {host: only.example.org}}]\n"
    )
    try:
        mesh.meshctl("apply", "-f", str(only))
        mesh.wait_synced()
        status, body = via_sidecar(mesh, "http://only.example.org/elsewhere", workload="ui-v1")
        assert status == 404 and body == b"route not found"
        stats = mesh.meshctl("stats", "ui-v1").stdout
        assert 'response_code="404",response_flags="NR"' in stats
    finally:
        mesh.meshctl("delete", "-f", str(only))
