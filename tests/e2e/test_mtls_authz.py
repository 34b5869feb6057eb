"""End to end: mTLS and authorization on the real local mesh, seen from outside as a user would check them.

mTLS is on by default between sidecars (PERMISSIVE inbound, auto mTLS outbound); the inbound port presents
the workload's SPIFFE certificate and asks for a client certificate; STRICT refuses plaintext at the
handshake; Istio's authorization task (deny-all, then allow step by step) on bookinfo-lite.
"""

from __future__ import annotations

import json
import socket
import ssl

import pytest

from mesh.control import exposition
from mesh.local import probes

pytestmark = pytest.mark.e2e

SPIFFE = "spiffe://cluster.local/ns/bookinfo/sa/{}"


def root_cert(mesh) -> str:
    return str(mesh.root / "state" / mesh.stack / "ca" / "root-cert.pem")


def plaintext_get(mesh, workload: str, path: str) -> tuple[int | None, str]:
    """(status, body) of a plaintext GET straight to the workload's inbound port (mesh.local.probes), or
    (None, why) when the connection was refused or closed."""
    result = probes.send(probes.Probe(direct=workload, path=path, status=200), mesh.sidecar_ports())
    return result.status, result.body if result.status is not None else result.error


def tls_handshake(mesh, port: int) -> tuple[dict, ssl.SSLSocket]:
    """A TLS client WITHOUT a certificate, trusting the mesh root: the server's certificate, and the socket."""
    ctx = ssl.create_default_context(cafile=root_cert(mesh))
    ctx.check_hostname = False  # mesh certificates carry a SPIFFE URI, no host name
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    return sock.getpeercert(), sock


def spiffe_of(cert: dict) -> list[str]:
    return [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]


def requests_seen(stats: str, **labels: str) -> float:
    return sum(v for name, lab, v in exposition.samples(stats)
               if name == "istio_requests_total" and all(lab.get(k) == x for k, x in labels.items()))


def test_sidecars_talk_mutual_tls_by_default(mesh):
    mesh.apply("all-v1")  # every request to books-v1, whatever ran before (the stack starts round-robin)
    mesh.wait_synced()
    labels = {"reporter": "destination", "connection_security_policy": "mutual_tls",
              "source_principal": SPIFFE.format("gw")}
    before = requests_seen(mesh.meshctl("stats", "books-v1").stdout, **labels)
    for _ in range(5):
        mesh.books()
    after = mesh.meshctl("stats", "books-v1").stdout
    assert requests_seen(after, **labels) - before >= 5, after


def test_inbound_port_presents_the_workload_identity_and_asks_for_a_client_certificate(mesh):
    port = mesh.sidecar_ports()["books-v1"]["inbound"]
    cert, sock = tls_handshake(mesh, port)
    try:
        assert spiffe_of(cert) == [SPIFFE.format("books")]
        sock.sendall(b"GET /books HTTP/1.1\r\nhost: books\r\n\r\n")
        # TLS 1.3: the server's refusal of a client without a certificate arrives as an alert on first read.
        with pytest.raises((ssl.SSLError, ConnectionError)) as refused:
            if not sock.recv(1024):
                raise ConnectionResetError("closed without an answer")
        assert "certificate" in str(refused.value).lower() or isinstance(refused.value, ConnectionError)
    finally:
        sock.close()


def test_permissive_accepts_plaintext_and_strict_refuses_it_at_the_handshake(mesh):
    scenario = str(mesh.root / "stacks" / "routing" / "mtls-strict.yaml")
    status, body = plaintext_get(mesh, "books-v1", "/books")
    assert status == 200, body  # PERMISSIVE (the default): a client outside the mesh is served
    mesh.meshctl("apply", "-f", scenario)
    mesh.wait_synced()
    try:
        status, why = plaintext_get(mesh, "books-v1", "/books")
        assert status is None, f"STRICT served plaintext: {status} {why}"
        assert mesh.books()["versions"]["books"] == "v1"  # the mesh itself still works, all mTLS
    finally:
        mesh.meshctl("delete", "-f", scenario)
        mesh.apply("all-v1")
        mesh.wait_synced()
    status, body = plaintext_get(mesh, "books-v1", "/books")
    assert status == 200, body  # back to PERMISSIVE


def _policies(mesh) -> dict[str, str]:
    """The authz-bookinfo scenario's AuthorizationPolicies, each as its own YAML document."""
    text = (mesh.root / "stacks" / "routing" / "authz-bookinfo.yaml").read_text()
    docs = text.split("\n---\n")
    return {doc.split("name: ", 1)[1].split("\n", 1)[0]: doc for doc in docs if "kind: AuthorizationPolicy" in doc}


def _apply_policy(mesh, tmp_path, name: str, doc: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(doc + "\n")
    mesh.meshctl("apply", "-f", str(path))
    mesh.wait_synced()


def test_istio_authorization_task_step_by_step(mesh, tmp_path):
    policies = _policies(mesh)
    mesh.apply("all-v1")
    mesh.wait_synced()
    try:
        _apply_policy(mesh, tmp_path, "allow-nothing", policies["allow-nothing"])
        status, body = mesh.get("/gateway/books")
        assert (status, body.decode()) == (403, "RBAC: access denied")  # gw's sidecar refuses the ingress

        _apply_policy(mesh, tmp_path, "gw", policies["gw-from-ingress-and-ui"])
        status, body = mesh.get("/gateway/books")
        assert status == 502 and json.loads(body)["service"] == "books", body  # gw in, books refuses gw
        assert "403" in json.loads(body)["error"]

        _apply_policy(mesh, tmp_path, "books", policies["books-from-gw"])
        status, body = mesh.get("/gateway/books")
        assert status == 502 and "ratings" in json.loads(body)["error"], body  # books in, ratings refuses

        _apply_policy(mesh, tmp_path, "ratings", policies["ratings-from-books"])
        assert mesh.books()["books"][0]["rating"]["presentation"] == ":-)"  # the whole chain is allowed

        status, body = plaintext_get(mesh, "books-v1", "/books")
        assert (status, body) == (403, "RBAC: access denied")  # no identity: not gw
        stats = mesh.meshctl("stats", "books-v1").stdout
        assert requests_seen(stats, reporter="destination", response_code="403", response_flags="RBAC") >= 1
    finally:
        for name in ("allow-nothing", "gw", "books", "ratings"):
            path = tmp_path / f"{name}.yaml"
            if path.exists():
                mesh.meshctl("delete", "-f", str(path), check=False)
        mesh.wait_synced()
    assert mesh.books()["versions"]["books"] == "v1"
