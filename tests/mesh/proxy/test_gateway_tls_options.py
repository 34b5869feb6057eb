"""Gateway server TLS options on loopback: maxProtocolVersion, cipherSuites (TLS 1.2) and client certificate
pinning (verifyCertificateHash / verifyCertificateSpki), alone and on a port shared with other servers."""

from __future__ import annotations

import asyncio
import hashlib
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mesh.proxy import gateway_tls
from mesh.view import security
from tests import pki
from tests.mesh.proxy import tlsnet
from tests.mesh.proxy.test_gateway_tls import client, gateway, port_of, simple
from tests.mesh.proxy.tlsnet import http, refused

GCM_128 = "ECDHE-ECDSA-AES128-GCM-SHA256"
GCM_256 = "ECDHE-ECDSA-AES256-GCM-SHA384"
CBC_128 = "ECDHE-ECDSA-AES128-SHA"


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
async def test_on_a_shared_port_the_lowest_maximum_caps_every_server_and_suites_stay_per_server(ca, tmp_path):
    """OpenSSL settles the version on the first context's range, before SNI picks a server: a capped server
    caps its port (analyze warns), so a client is served at that maximum rather than refused."""
    limited = simple(ca, tmp_path, "a.example.com", cipher_suites=(GCM_256,), max_protocol="TLSV1_2")
    gw = await gateway((limited, simple(ca, tmp_path, "b.example.com")))
    try:
        assert (await http(port_of(gw), ctx=client(ca), sni="b.example.com")).version == "TLSv1.2"
        assert (await http(port_of(gw), ctx=client(ca), sni="a.example.com")).version == "TLSv1.2"
        assert await refused(port_of(gw), ctx=tls12(ca, ciphers=GCM_128), sni="a.example.com")
        assert (await http(port_of(gw), ctx=tls12(ca, ciphers=GCM_128), sni="b.example.com")).status == 200
    finally:
        await gw.proxy.shutdown()


@pytest.mark.uvloop
async def test_the_servers_order_of_suites_wins(ca, tmp_path):
    gw = await gateway((simple(ca, tmp_path, "a.example.com", cipher_suites=(GCM_256, CBC_128)),))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw), ssl=tls12(
            ca, ciphers=f"{CBC_128}:{GCM_256}"), server_hostname="a.example.com")
        assert writer.get_extra_info("ssl_object").cipher()[0] == GCM_256  # not the client's first choice
        writer.close()
    finally:
        await gw.proxy.shutdown()


class Negotiated:
    """What `refusal` reads of a finished handshake."""

    def __init__(self, version: str, cipher: str) -> None:
        self._version, self._cipher = version, cipher

    def version(self) -> str:
        return self._version

    def cipher(self) -> tuple[str, str, int]:
        return self._cipher, self._version, 256


def test_refusal_checks_range_and_tls12_suites_after_the_handshake(ca, tmp_path):
    server = gateway_tls.CompiledServer(simple(ca, tmp_path, "a.example.com", cipher_suites=(GCM_256,),
                                               min_protocol="TLSV1_2", max_protocol="TLSV1_2"))
    assert server.refusal(Negotiated("TLSv1.2", GCM_256)) is None
    assert "not among the server's cipherSuites" in server.refusal(Negotiated("TLSv1.2", GCM_128))
    assert "above TLSV1_2" in server.refusal(Negotiated("TLSv1.3", "TLS_AES_256_GCM_SHA384"))
    assert "below TLSV1_2" in server.refusal(Negotiated("TLSv1.1", GCM_256))
    open_range = gateway_tls.CompiledServer(simple(ca, tmp_path, "b.example.com", cipher_suites=(GCM_256,)))
    assert open_range.refusal(Negotiated("TLSv1.3", "TLS_AES_128_GCM_SHA256")) is None  # 1.3 suites: not ours


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
