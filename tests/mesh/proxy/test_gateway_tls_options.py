"""Gateway server TLS options on loopback: maxProtocolVersion, cipherSuites (TLS 1.2) and client certificate
pinning (verifyCertificateHash / verifyCertificateSpki), alone and on a port shared with other servers."""

from __future__ import annotations

import hashlib
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mesh.proxy import gateway_tls
from mesh.view import model, security
from tests import pki
from tests.mesh.proxy import tlsnet
from tests.mesh.proxy.test_gateway_tls import client, gateway, port_of, simple
from tests.mesh.proxy.tlsnet import http, refused

GCM_128 = "ECDHE-ECDSA-AES128-GCM-SHA256"
GCM_256 = "ECDHE-ECDSA-AES256-GCM-SHA384"


def tls12(ca, material=None, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = client(ca, material, maximum=ssl.TLSVersion.TLSv1_2)
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def leaf_der(material) -> bytes:
    first = material.chain_pem.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(first.decode())


def spki_sha256(der: bytes) -> str:
    key = x509.load_der_x509_certificate(der).public_key()
    return hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


@pytest.mark.uvloop
async def test_max_protocol_is_honoured(ca, tmp_path):
    gw = await gateway((simple(ca, tmp_path, "a.example.com", max_protocol="TLSV1_2"),))
    try:
        only13 = client(ca)
        only13.minimum_version = ssl.TLSVersion.TLSv1_3
        assert await refused(port_of(gw), ctx=only13, sni="a.example.com")
        answer = await http(port_of(gw), ctx=client(ca), sni="a.example.com")
        assert answer.status == 200 and answer.version == "TLSv1.2"
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_cipher_suites_limit_tls12_and_leave_tls13_alone(ca, tmp_path):
    gw = await gateway((simple(ca, tmp_path, "a.example.com", cipher_suites=(GCM_256,)),))
    try:
        assert await refused(port_of(gw), ctx=tls12(ca, ciphers=GCM_128), sni="a.example.com")
        assert (await http(port_of(gw), ctx=tls12(ca, ciphers=GCM_256), sni="a.example.com")).status == 200
        assert (await http(port_of(gw), ctx=client(ca), sni="a.example.com")).version == "TLSv1.3"
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_a_port_shared_with_an_unrestricted_server_still_enforces_each(ca, tmp_path):
    """OpenSSL keeps the first context's protocol range when SNI picks another: the base allows the widest,
    and the chosen server's limits are checked right after the handshake."""
    limited = simple(ca, tmp_path, "a.example.com", cipher_suites=(GCM_256,), max_protocol="TLSV1_2")
    gw = await gateway((limited, simple(ca, tmp_path, "b.example.com")))
    try:
        assert await refused(port_of(gw), ctx=tls12(ca, ciphers=GCM_128), sni="a.example.com")
        assert (await http(port_of(gw), ctx=tls12(ca, ciphers=GCM_128), sni="b.example.com")).status == 200
        assert (await http(port_of(gw), ctx=client(ca), sni="b.example.com")).version == "TLSv1.3"
        assert await refused(port_of(gw), ctx=client(ca), sni="a.example.com")  # TLS 1.3 above a's maximum
        assert gw.counter("downstream_cx_tls_failures_total", reason="policy") == 1
        assert (await http(port_of(gw), ctx=tls12(ca, ciphers=GCM_256), sni="a.example.com")).status == 200
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
@pytest.mark.parametrize("pin", ["cert", "spki"])
async def test_pinned_client_certificates_only(ca, tmp_path, pin):
    roots = tlsnet.write_pem(tmp_path, "clients-root.pem", ca.root_pem)
    partner, other = tlsnet.mesh(ca, tmp_path, "partner"), tlsnet.mesh(ca, tmp_path, "other")
    der = leaf_der(partner)
    pins = ({"cert_sha256": (hashlib.sha256(der).hexdigest(),)} if pin == "cert"
            else {"spki_sha256": (spki_sha256(der),)})
    gw = await gateway((simple(ca, tmp_path, "m.example.com", mode=security.TLS_MUTUAL, ca_file=roots, **pins),))
    try:
        assert await refused(port_of(gw), ctx=client(ca, other), sni="m.example.com")  # same CA, not pinned
        assert gw.counter("downstream_cx_tls_failures_total", reason="policy") == 1
        assert (await http(port_of(gw), ctx=client(ca, partner), sni="m.example.com")).status == 200
        stranger = tlsnet.mesh(pki.make_ca(), tmp_path, "stranger")
        assert await refused(port_of(gw), ctx=client(ca, stranger), sni="m.example.com")  # chain first
    finally:
        await gw.proxy.shutdown()


def test_a_server_whose_range_is_empty_or_whose_suites_are_unavailable_is_a_view_error(ca, tmp_path):
    with pytest.raises(ValueError, match="below minProtocolVersion"):
        gateway_tls.CompiledServer(simple(ca, tmp_path, "a.example.com", min_protocol="TLSV1_3",
                                          max_protocol="TLSV1_2"))
    with pytest.raises(ValueError, match="none of the cipher suites"):
        gateway_tls.CompiledServer(simple(ca, tmp_path, "b.example.com", cipher_suites=("NO-SUCH-SUITE",)))
    assert model.ServerTls("SIMPLE").max_protocol == ""  # unset: no cap
