"""The mesh CA on the real local mesh: every proxy holds a workload certificate for its service account,
chained to the stack's root; the CA key and proxy keys are private; proxies reach the control plane only
on the TLS mesh channel; a restarted proxy gets a new certificate with a new bootstrap token."""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
import urllib.error
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.e2e.conftest import DIRECT

pytestmark = pytest.mark.e2e

IDENTITIES = {
    "ui-v1": "spiffe://cluster.local/ns/bookinfo/sa/ui",
    "gw-v1": "spiffe://cluster.local/ns/bookinfo/sa/gw",
    "books-v1": "spiffe://cluster.local/ns/bookinfo/sa/books",
    "books-v2": "spiffe://cluster.local/ns/bookinfo/sa/books",
    "ratings-v1": "spiffe://cluster.local/ns/bookinfo/sa/ratings",
    "ratings-v2": "spiffe://cluster.local/ns/bookinfo/sa/ratings",
    "ingress": "spiffe://cluster.local/ns/weir-system/sa/istio-ingressgateway-service-account",
}


def state_dir(mesh):
    return mesh.root / "state" / mesh.stack


def secrets(mesh, workload: str) -> dict:
    return json.loads(mesh.meshctl("proxy-config", workload, "secrets").stdout)


def test_every_proxy_holds_a_certificate_of_its_service_account(mesh):
    root = x509.load_pem_x509_certificate((state_dir(mesh) / "ca" / "root-cert.pem").read_bytes())
    fingerprint = root.fingerprint(hashes.SHA256()).hex(":").upper()
    for workload, spiffe in IDENTITIES.items():
        dump = secrets(mesh, workload)
        assert (dump["state"], dump["spiffeId"], dump["source"]) == ("ACTIVE", spiffe, "ca"), workload
        assert dump["roots"][0]["fingerprintSha256"] == fingerprint
        assert dump["chain"][0]["issuer"] == root.subject.rfc4514_string()
        assert dump["expiresInSeconds"] > 0.5 * dump["lifetimeSeconds"] - 120
        assert "PRIVATE" not in json.dumps(dump)
    status = mesh.meshctl_json("status")
    assert status["warnings"] == [] and len(status["certificates"]) == len(IDENTITIES)
    assert 'weir_cert_rotation_failures_total 0' in mesh.meshctl("stats", "ui-v1").stdout


def test_keys_are_private(mesh):
    ca = state_dir(mesh) / "ca"
    assert oct(ca.stat().st_mode & 0o777) == "0o700" and oct((ca / "ca-key.pem").stat().st_mode & 0o777) == "0o600"
    proxies = sorted((state_dir(mesh) / "proxies").iterdir())
    assert [p.name for p in proxies] == sorted(
        ["books-v1.bookinfo", "books-v2.bookinfo", "gw-v1.bookinfo", "istio-ingressgateway.weir-system",
         "ratings-v1.bookinfo", "ratings-v2.bookinfo", "ui-v1.bookinfo"])
    for directory in proxies:
        assert oct(directory.stat().st_mode & 0o777) == "0o700"
        assert oct((directory / "key.pem").stat().st_mode & 0o777) == "0o600"


def test_discovery_is_only_on_the_tls_mesh_channel(mesh):
    request = urllib.request.Request(mesh.control_plane + "/v1/discovery", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as plain:
        DIRECT.open(request, timeout=5)
    assert plain.value.code == 404
    channel = json.loads((state_dir(mesh) / "state.json").read_text())["urls"]["meshChannel"]
    context = ssl.create_default_context(cafile=str(state_dir(mesh) / "ca" / "root-cert.pem"))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    body = json.dumps({"node": {"id": "ui-v1.bookinfo", "namespace": "bookinfo", "serviceAccount": "ui"}}).encode()
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        opener.open(urllib.request.Request(channel + "/v1/discovery", data=body, method="POST"), timeout=5)
    assert anonymous.value.code == 401


def test_a_restarted_proxy_gets_a_new_certificate(mesh):
    before = secrets(mesh, "ratings-v1")
    victim = {p["name"]: p for p in mesh.meshctl_json("status")["processes"]}["ratings-v1.proxy"]
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = {p["name"]: p for p in mesh.meshctl_json("status")["processes"]}["ratings-v1.proxy"]
        if now["pid"] != victim["pid"] and now["ready"]:
            break
        time.sleep(0.2)
    assert now["ready"] and now["restarts"] == victim["restarts"] + 1, now
    mesh.started.append(now["pid"])
    after = secrets(mesh, "ratings-v1")
    assert after["spiffeId"] == before["spiffeId"] and after["serial"] != before["serial"]
    assert list((state_dir(mesh) / "ca" / "tokens").glob("*.json")) == []  # every token was used once
    mesh.wait_synced()
    assert mesh.books()["versions"]["gw"] == "v1"
