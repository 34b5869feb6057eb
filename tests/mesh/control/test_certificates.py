"""The certificate service: the identity signed is the authenticated caller's; a CSR asking for another
identity, bad CSRs, reused or expired tokens, expired or foreign client certificates are refused with the
right status."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from mesh.control import authn, certificates, tokens
from mesh.control import ca as ca_mod
from mesh.proxy import certagent
from tests import pki

START = time.time()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tmp_path, clock) -> certificates.CertificateService:
    return certificates.CertificateService(pki.make_ca(now=START, ttl_s=3600),
                                           authn.BootstrapTokens(tmp_path, clock=clock), clock=clock)


BOOKS = "spiffe://cluster.local/ns/bookinfo/sa/books"
RATINGS = "spiffe://cluster.local/ns/bookinfo/sa/ratings"
ADMIN = "spiffe://cluster.local/ns/kube-system/sa/admin"


def csr(spiffe: str = "") -> str:
    """A proxy's CSR; `spiffe` names the identity it asks for (none: whatever the caller holds)."""
    return certagent.make_csr(ca_mod.new_key(), spiffe).decode()


def issue(service, body, peer=None):
    return asyncio.run(service.issue(body, peer))


def leaf_of(issued: certificates.Issued) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.cert_chain)


def uris(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)


def der(issued: certificates.Issued) -> bytes:
    return leaf_of(issued).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("asked", [BOOKS, ""])
def test_a_token_gets_its_records_identity(service, tmp_path, asked):
    token = tokens.mint(tmp_path, "bookinfo", "books", "books-v1.bookinfo", now=START)
    issued = issue(service, {"csr": csr(asked), "token": token})
    assert uris(leaf_of(issued)) == ["spiffe://cluster.local/ns/bookinfo/sa/books"]
    assert issued.spiffe_id == "spiffe://cluster.local/ns/bookinfo/sa/books"
    assert issued.root_cert == service.authority.root_pem and issued.serial == f"{leaf_of(issued).serial_number:x}"
    assert issued.not_after == pytest.approx(START + 3600, abs=1)
    leaf_of(issued).verify_directly_issued_by(service.authority.cert)
    doc = issued.to_json()
    assert set(doc) == {"certChain", "rootCert", "notAfter", "serial", "spiffeId"} and doc["notAfter"].endswith("Z")
    assert service.stats["issued_bootstrap_token"] == 1


def test_a_token_works_once(service, tmp_path):
    token = tokens.mint(tmp_path, "bookinfo", "books", "books-v1.bookinfo", now=START)
    issue(service, {"csr": csr(), "token": token})
    with pytest.raises(authn.AuthnError, match="already used") as caught:
        issue(service, {"csr": csr(), "token": token})
    assert caught.value.status == 401


def test_an_expired_token_is_refused(service, tmp_path, clock):
    token = tokens.mint(tmp_path, "bookinfo", "books", "books-v1.bookinfo", now=START, ttl_s=600)
    clock.now = START + 601
    with pytest.raises(authn.AuthnError, match="expired") as caught:
        issue(service, {"csr": csr(), "token": token})
    assert caught.value.status == 401


@pytest.mark.parametrize(("body", "message"), [
    ({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}, "not a PEM"),
    ({"csr": ""}, "csr: required"),
    ({}, "csr: required"),
    ({"csr": "x" * (certificates.MAX_CSR_CHARS + 1)}, "csr: required"),
    ({"csr": "CSR", "ttlSeconds": -5}, "ttlSeconds"),
    ({"csr": "CSR", "ttlSeconds": True}, "ttlSeconds"),
    ({"csr": "CSR", "token": 7}, "token"),
    (["csr"], "expected a JSON object"),
])
def test_a_bad_request_is_400_and_does_not_use_up_the_token(service, tmp_path, body, message):
    token = tokens.mint(tmp_path, "bookinfo", "books", "books-v1.bookinfo", now=START)
    if isinstance(body, dict):
        body = {**body, "token": body.get("token", token)}
        if body.get("csr") == "CSR":
            body["csr"] = csr()
    with pytest.raises(certificates.RequestError, match=message) as caught:
        issue(service, body)
    assert caught.value.status == 400
    assert issue(service, {"csr": csr(), "token": token}).spiffe_id.endswith("/sa/books")  # still usable


def test_a_csr_whose_signature_does_not_verify_is_400(service, tmp_path):
    good = certagent.make_csr(ca_mod.new_key(), "spiffe://cluster.local/ns/bookinfo/sa/books")
    tampered_der = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER).replace(b"Weir", b"Wejr", 1)
    tampered = (b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(tampered_der)
                + b"-----END CERTIFICATE REQUEST-----\n")
    token = tokens.mint(tmp_path, "bookinfo", "books", "p", now=START)
    with pytest.raises(certificates.RequestError, match="signature does not verify"):
        issue(service, {"csr": tampered.decode(), "token": token})


@pytest.mark.parametrize("asked", [ADMIN, BOOKS])
def test_a_token_cannot_get_an_identity_its_record_does_not_hold(service, tmp_path, asked):
    token = tokens.mint(tmp_path, "bookinfo", "ratings", "ratings-v1.bookinfo", now=START)
    with pytest.raises(authn.AuthnError, match=f"asks for identity {asked}, but the caller is authenticated as "
                                               f"{RATINGS} \\(bootstrap-token\\)") as caught:
        issue(service, {"csr": csr(asked), "token": token})
    assert caught.value.status == 403
    assert service.stats["refused_identity"] == 1 and "issued_bootstrap_token" not in service.stats
    with pytest.raises(authn.AuthnError, match="already used"):  # the token was spent on the attempt
        issue(service, {"csr": csr(RATINGS), "token": token})


def test_a_csr_naming_its_identity_and_another_is_refused(service, tmp_path):
    key = ca_mod.new_key()
    both = (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(RATINGS),
                                                        x509.UniformResourceIdentifier(ADMIN)]), critical=False)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    token = tokens.mint(tmp_path, "bookinfo", "ratings", "p", now=START)
    with pytest.raises(authn.AuthnError, match=f"asks for identity {ADMIN},") as caught:
        issue(service, {"csr": both, "token": token})
    assert caught.value.status == 403


def test_renewal_cannot_switch_identity(service, clock):
    chain, _, _ = pki.workload(service.authority, "bookinfo", "ratings", now=START)
    current = x509.load_pem_x509_certificate(chain).public_bytes(serialization.Encoding.DER)
    with pytest.raises(authn.AuthnError, match=f"asks for identity {BOOKS}, but the caller is authenticated as "
                                               f"{RATINGS} \\(client-certificate\\)") as caught:
        issue(service, {"csr": csr(BOOKS)}, peer=current)
    assert caught.value.status == 403
    assert service.stats["refused_identity"] == 1 and "issued_client_certificate" not in service.stats
    assert service.dump()["counters"]["refused_identity"] == 1


def test_renewal_by_client_certificate_keeps_its_identity(service, clock):
    chain, _, _ = pki.workload(service.authority, "bookinfo", "ratings", now=START)
    current = x509.load_pem_x509_certificate(chain).public_bytes(serialization.Encoding.DER)
    clock.now = START + 1800
    renewed = issue(service, {"csr": csr(RATINGS)}, peer=current)
    assert uris(leaf_of(renewed)) == ["spiffe://cluster.local/ns/bookinfo/sa/ratings"]
    assert renewed.not_after == pytest.approx(START + 1800 + 3600, abs=1)
    assert service.stats["issued_client_certificate"] == 1


def test_renewal_with_an_expired_certificate_is_refused(service, clock):
    chain, _, _ = pki.workload(service.authority, "bookinfo", "ratings", now=START, ttl_s=60)
    current = x509.load_pem_x509_certificate(chain).public_bytes(serialization.Encoding.DER)
    clock.now = START + 61
    with pytest.raises(authn.AuthnError, match="expired") as caught:
        issue(service, {"csr": csr()}, peer=current)
    assert caught.value.status == 401


def test_renewal_with_a_certificate_of_another_root_is_refused(service):
    chain, _, _ = pki.workload(pki.make_ca(now=START), "bookinfo", "ratings", now=START)
    foreign = x509.load_pem_x509_certificate(chain).public_bytes(serialization.Encoding.DER)
    with pytest.raises(authn.AuthnError, match="not issued by this mesh's CA"):
        issue(service, {"csr": csr()}, peer=foreign)


def test_no_credential_is_401(service):
    with pytest.raises(authn.AuthnError, match="no client certificate") as caught:
        issue(service, {"csr": csr()})
    assert caught.value.status == 401
    assert service.stats["refused_401"] == 1


@pytest.mark.parametrize(("asked", "lifetime"), [(600, 600), (10 * 3600, 3600), (None, 3600)])
def test_a_requested_lifetime_is_honoured_up_to_the_workload_ttl(service, tmp_path, asked, lifetime):
    token = tokens.mint(tmp_path, "bookinfo", "books", "p", now=START)
    body = {"csr": csr(), "token": token, **({"ttlSeconds": asked} if asked else {})}
    assert issue(service, body).not_after == pytest.approx(START + lifetime, abs=1)


def test_the_debug_dump_shows_the_ca_and_never_the_key(service):
    dump = service.dump()
    assert dump["subject"] == "CN=Weir mesh root CA,O=cluster.local" and dump["workloadCertTtlSeconds"] == 3600
    assert "PRIVATE" not in str(dump)
