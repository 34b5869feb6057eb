"""Who is asking: TokenReview against recorded API answers, and client certificates against the CA."""

from __future__ import annotations

import asyncio
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mesh.control import authn, kube
from mesh.control import ca as ca_mod
from mesh.proxy import certagent
from tests import pki
from tests.mesh.control.kubeapi import ScriptedApi, recorded

TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkRHN.payload.signature"


def review(*answers):
    api = ScriptedApi(*answers)
    return api, asyncio.run(authn.TokenReviewer(api, "weir-ca").authenticate(TOKEN))


def test_an_authenticated_service_account_token_names_the_caller():
    api, caller = review((201, recorded("tokenreview_authenticated")))
    assert (caller.namespace, caller.service_account, caller.via) == ("bookinfo", "books", authn.SERVICE_ACCOUNT_TOKEN)
    assert caller.spiffe_id == "spiffe://cluster.local/ns/bookinfo/sa/books"
    method, path, body = api.requests[0]
    assert (method, path) == ("POST", "/apis/authentication.k8s.io/v1/tokenreviews")
    assert body == {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": {"token": TOKEN, "audiences": ["weir-ca"]}}


@pytest.mark.parametrize(("name", "status", "error", "message"), [
    ("tokenreview_unauthenticated", 201, authn.AuthnError, "not authenticated: .*token has expired"),
    ("tokenreview_audience_mismatch", 201, authn.AuthnError, "not authenticated: .*invalid for the target audiences"),
    ("tokenreview_wrong_audience", 201, authn.AuthnError, "not for audience 'weir-ca'"),
    ("tokenreview_not_a_service_account", 201, authn.Forbidden, "platform-engineer@example.com is not a service"),
    ("tokenreview_forbidden", 403, authn.Unavailable, "TokenReview failed: HTTP 403: tokenreviews.* is forbidden"),
])
def test_tokens_the_api_server_does_not_vouch_for_are_refused(name, status, error, message):
    with pytest.raises(error, match=message) as caught:
        review((status, recorded(name)))
    assert caught.type is error  # not a subclass: the status code differs
    assert caught.value.status == {authn.AuthnError: 401, authn.Forbidden: 403, authn.Unavailable: 503}[error]


def test_an_unreachable_api_server_is_unavailable_not_unauthenticated():
    with pytest.raises(authn.Unavailable, match="connection refused"):
        review(kube.KubeError("POST /apis/...: connection refused"))


def test_an_empty_or_huge_token_is_not_sent():
    api = ScriptedApi()
    for bad in ("", "x" * (authn.MAX_TOKEN_CHARS + 1)):
        with pytest.raises(authn.AuthnError, match="malformed"):
            asyncio.run(authn.TokenReviewer(api).authenticate(bad))
    assert api.requests == []


# -- client certificates -------------------------------------------------------------------------------


def der(chain_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(chain_pem).public_bytes(serialization.Encoding.DER)


def test_a_certificate_from_this_ca_names_its_spiffe_identity():
    ca = pki.make_ca()
    chain, _, _ = pki.workload(ca, "bookinfo", "ratings")
    caller = authn.PeerCertificates(lambda: ca).authenticate(der(chain))
    assert (caller.namespace, caller.service_account, caller.via) == ("bookinfo", "ratings", authn.CLIENT_CERTIFICATE)


def test_expired_foreign_and_identity_less_certificates_are_refused():
    ca, now = pki.make_ca(), time.time()
    chain, _, _ = pki.workload(ca, "bookinfo", "ratings", ttl_s=100, now=now)
    clock = [now + 99]
    peers = authn.PeerCertificates(lambda: ca, clock=lambda: clock[0])
    peers.authenticate(der(chain))
    clock[0] = now + 100
    with pytest.raises(authn.AuthnError, match="expired"):
        peers.authenticate(der(chain))
    other, _, _ = pki.workload(pki.make_ca(), "bookinfo", "ratings")
    with pytest.raises(authn.AuthnError, match="not issued by this mesh's CA"):
        authn.PeerCertificates(lambda: ca).authenticate(der(other))
    plain = ca.sign_workload(certagent.make_csr(ca_mod.new_key(), "x"), "urn:not-spiffe", now=now)
    with pytest.raises(authn.Forbidden, match="no SPIFFE identity"):
        authn.PeerCertificates(lambda: ca).authenticate(der(plain))
    foreign = ca.sign_workload(certagent.make_csr(ca_mod.new_key(), "x"), "spiffe://evil.example/ns/a/sa/b", now=now)
    with pytest.raises(authn.Forbidden, match="not in trust domain cluster.local"):
        authn.PeerCertificates(lambda: ca).authenticate(der(foreign))
    for nothing in (None, b""):
        with pytest.raises(authn.AuthnError, match="no client certificate"):
            authn.PeerCertificates(lambda: ca).authenticate(nothing)
    with pytest.raises(authn.AuthnError, match="unreadable"):
        authn.PeerCertificates(lambda: ca).authenticate(b"\x30\x03junk")
