"""End to end: the ingress gateway terminates TLS for a Gateway server on port 443 (the stack's
ingressTlsPort locally), with its certificate from a `credentialName` (locally the directory
`<state>/credentials/<name>/` holding tls.crt, tls.key and ca.crt, as a Kubernetes TLS Secret's keys);
SIMPLE serves any client that trusts the certificate, MUTUAL only a client with a certificate of ca.crt."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
import yaml

from tests import pki

pytestmark = pytest.mark.e2e

HOST = "bookinfo.example.com"
CREDENTIAL = "bookinfo-credential"


def gateway_yaml(mode: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-https, namespace: bookinfo}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
    - port: {{number: 443, name: https, protocol: HTTPS}}
      hosts: ["{HOST}"]
      tls: {{mode: {mode}, credentialName: {CREDENTIAL}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo-https, namespace: bookinfo}}
spec:
  hosts: ["{HOST}"]
  gateways: [bookinfo-https]
  http:
    - match: [{{uri: {{prefix: /gateway}}}}]
      route: [{{destination: {{host: gw, port: {{number: 9080}}}}}}]
"""


@pytest.fixture(scope="module")
def site(mesh, tmp_path_factory):
    """An outside CA (not the mesh's) with the site's certificate in the credential directory."""
    authority = pki.make_ca()
    chain, key = authority.issue_server([HOST], now=time.time())
    directory = mesh.root / "state" / mesh.stack / "credentials" / CREDENTIAL
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(chain)
    (directory / "tls.key").write_bytes(key)
    (directory / "ca.crt").write_bytes(authority.root_pem)
    work = tmp_path_factory.mktemp("gateway-tls")
    (work / "ca.pem").write_bytes(authority.root_pem)
    client_chain, client_key, _ = pki.workload(authority, "outside", "client")
    (work / "client.pem").write_bytes(client_chain)
    (work / "client-key.pem").write_bytes(client_key)
    yield work
    mesh.meshctl("delete", "-f", str(work / "gateway.yaml"), check=False)
    mesh.wait_synced()


def https_get(mesh, work, path: str, client_cert: bool = False) -> tuple[int, bytes]:
    port = yaml.safe_load((mesh.root / "stacks" / f"Pulumi.{mesh.stack}.yaml").read_text())[
        "config"]["weir:local"]["ingressTlsPort"]
    ctx = ssl.create_default_context(cafile=str(work / "ca.pem"))
    if client_cert:
        ctx.load_cert_chain(str(work / "client.pem"), str(work / "client-key.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if not data:  # TLS 1.3: a refused client certificate may show as a close after the handshake
        raise ConnectionResetError("closed without an answer")
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def apply(mesh, work, mode: str) -> None:
    (work / "gateway.yaml").write_text(gateway_yaml(mode))
    mesh.meshctl("apply", "-f", str(work / "gateway.yaml"))
    mesh.wait_synced()


def test_simple_tls_with_a_credential(mesh, site):
    apply(mesh, site, "SIMPLE")
    status, body = https_get(mesh, site, "/gateway/books")
    assert status == 200 and b'"versions"' in body  # routed by the VirtualService bound to the HTTPS server


def test_mutual_tls_wants_a_client_certificate_of_the_credential_ca(mesh, site):
    apply(mesh, site, "MUTUAL")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(mesh, site, "/gateway/books")
    status, body = https_get(mesh, site, "/gateway/books", client_cert=True)
    assert status == 200 and b'"versions"' in body
