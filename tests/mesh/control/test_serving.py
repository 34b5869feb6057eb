"""The control plane's serving certificate: SANs proxies dial, 0600 files, renewed at half its life into
the same SSL context (new handshakes get the new certificate)."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl

from cryptography import x509

from mesh.control import serving
from tests import pki

START = 1_800_000_000.0


def test_serving_certificate_names_and_renewal(tmp_path):
    ca = pki.make_ca(now=START, ttl_s=1000)
    now = [START]
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        now[0] += delay
        if len(sleeps) == 2:
            raise asyncio.CancelledError

    identity = serving.ServingCertificate(lambda: ca, tmp_path, clock=lambda: now[0], sleep=fake_sleep)
    context = identity.issue()
    assert context.verify_mode == ssl.CERT_OPTIONAL
    first = x509.load_pem_x509_certificates(identity.cert_file.read_bytes())[0]
    sans = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == [
        "localhost", "weir-control.weir-system.svc", "weir-control.weir-system.svc.cluster.local"]
    first.verify_directly_issued_by(ca.cert)
    assert oct(identity.key_file.stat().st_mode & 0o777) == "0o600"
    assert identity.renew_in() == 500
    try:
        asyncio.run(identity.run())
    except asyncio.CancelledError:
        pass
    second = x509.load_pem_x509_certificates(identity.cert_file.read_bytes())[0]
    assert sleeps == [500, 500] and second.serial_number != first.serial_number
    assert identity.context is context  # reloaded in place: the listener keeps its context
