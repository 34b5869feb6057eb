"""DestinationRule `tls` → Cluster.tls at every level; Gateway server `tls` → Listener.tls / https_redirect."""

from __future__ import annotations

import hashlib
import logging

import pytest

from mesh import api
from mesh.control import builder, snapshot
from mesh.view import model
from tests.mesh.control import simulate as sim
from tests.mesh.control.conftest import INGRESS, out, sidecar, snap, view

DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: books, namespace: bookinfo}
spec:
  host: books
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, sni: books.mesh}
    portLevelSettings:
    - port: {number: 9080}
      tls:
        mode: SIMPLE
        caCertificates: /certs/ca.pem
        subjectAltNames: [books.example.com]
        insecureSkipVerify: true
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      tls:
        mode: MUTUAL
        clientCertificate: /certs/client.pem
        privateKey: /certs/client.key
        caCertificates: /certs/ca.pem
        sni: books-v2.example.com
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      tls: {mode: DISABLE}
      portLevelSettings:
      - port: {number: 9080}
        loadBalancer: {simple: RANDOM}
---
"""


def tls_of(v: model.ProxyView, name: str) -> model.UpstreamTls | None:
    return sim.cluster(v, name).tls


def test_no_tls_anywhere_is_auto_mtls():
    v = view()
    assert all(c.tls is None for c in v.clusters)


def test_top_level_tls():
    v = view(DR.replace("    portLevelSettings:\n    - port: {number: 9080}\n      tls:\n        mode: SIMPLE\n"
                        "        caCertificates: /certs/ca.pem\n        subjectAltNames: [books.example.com]\n"
                        "        insecureSkipVerify: true\n", ""))
    assert tls_of(v, out("books")) == model.UpstreamTls(mode="ISTIO_MUTUAL", sni="books.mesh")
    assert tls_of(v, out("books", "v1")) == model.UpstreamTls(mode="ISTIO_MUTUAL", sni="books.mesh")


def test_port_level_subset_and_port_level_subset_tls():
    v = view(DR)
    simple = model.UpstreamTls(mode="SIMPLE", subject_alt_names=("books.example.com",), ca_file="/certs/ca.pem",
                               insecure_skip_verify=True)
    assert tls_of(v, out("books")) == simple  # the port's settings replace the top level
    assert tls_of(v, out("books", "v1")) == simple  # a subset without a policy inherits
    assert tls_of(v, out("books", "v2")) == model.UpstreamTls(  # the subset's tls overrides
        mode="MUTUAL", sni="books-v2.example.com", ca_file="/certs/ca.pem", cert_file="/certs/client.pem",
        key_file="/certs/client.key")
    # a subset port-level entry without tls means no tls for that port (Istio: no inheritance) → auto mTLS
    assert tls_of(v, out("books", "v3")) is None
    assert tls_of(v, out("ratings")) is None


def test_subset_disable_is_explicit_plaintext():
    v = view(DR.replace("      portLevelSettings:\n      - port: {number: 9080}\n        loadBalancer: {simple: RANDOM}\n",
                        ""))
    assert tls_of(v, out("books", "v3")) == model.UpstreamTls(mode="DISABLE")


GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["bookinfo/books.example.com"]
    tls: {mode: SIMPLE, serverCertificate: /certs/books.crt, privateKey: /certs/books.key,
          minProtocolVersion: TLSV1_3}
  - port: {number: 443, name: https-ratings, protocol: HTTPS}
    hosts: ["ratings.example.com"]
    tls: {mode: MUTUAL, credentialName: ratings-cred, subjectAltNames: [client.example.com]}
  - port: {number: 8443, name: https-mtls, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, serverCertificate: /c/s.crt, privateKey: /c/s.key, caCertificates: /c/ca.crt}
  - port: {number: 9443, name: passthrough, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 15443, name: istio, protocol: HTTPS}
    hosts: ["*.local"]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: books, namespace: bookinfo}
spec:
  hosts: ["*"]
  gateways: [secure]
  http:
  - route: [{destination: {host: books}}]
---
"""


def gateway_view(config: str = GATEWAY, credentials: str = "/var/weir/credentials") -> model.ProxyView:
    settings = snapshot.MeshSettings(credentials_dir=credentials)
    s = snapshot.build_snapshot(snap(config).resources, snap().registry, settings=settings)
    return builder.build_proxy_view(s, INGRESS)


def listener(v: model.ProxyView, port: int) -> model.Listener:
    return next(x for x in v.listeners if x.port == port)


def test_gateway_listeners_with_tls_and_redirect(caplog):
    with caplog.at_level(logging.WARNING, logger="mesh.control.gateways"):
        v = gateway_view()
    assert [x.port for x in v.listeners] == [80, 443, 8443, 15443]  # PASSTHROUGH skipped...
    assert "PASSTHROUGH" in caplog.text  # ...with a warning
    plain = listener(v, 80)
    assert plain.https_redirect and plain.tls == ()
    assert listener(v, 443).tls == (
        model.ServerTls(mode="SIMPLE", hosts=("books.example.com",), cert_file="/certs/books.crt",
                        key_file="/certs/books.key", min_protocol="TLSV1_3"),
        model.ServerTls(mode="MUTUAL", hosts=("ratings.example.com",),
                        cert_file="/var/weir/credentials/ratings-cred/tls.crt",
                        key_file="/var/weir/credentials/ratings-cred/tls.key",
                        ca_file="/var/weir/credentials/ratings-cred/ca.crt",
                        subject_alt_names=("client.example.com",)),
    )
    assert listener(v, 8443).tls == (
        model.ServerTls(mode="MUTUAL", hosts=("*",), cert_file="/c/s.crt", key_file="/c/s.key", ca_file="/c/ca.crt"),
    )
    assert listener(v, 15443).tls == (model.ServerTls(mode="ISTIO_MUTUAL", hosts=("*.local",)),)
    assert not listener(v, 443).https_redirect
    model.check_references(v)


def test_https_servers_route_like_http_servers():
    v = gateway_view()
    assert sim.hit(v, "http.443", "books.example.com") == out("books")
    assert sim.hit(v, "http.443", "ratings.example.com") == out("books")
    assert sim.virtual_host(v, "http.443", "other.example.com") is None  # not a host of the 443 servers
    assert sim.hit(v, "http.8443", "anything") == out("books")


MIXED = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: a-plain, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8000, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: b-tls, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8000, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: c}
  - port: {number: 8001, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: AUTO_PASSTHROUGH}
---
"""


def test_a_port_is_tls_or_plaintext_and_passthrough_never_crashes(caplog):
    with caplog.at_level(logging.WARNING, logger="mesh.control.gateways"):
        v = gateway_view(MIXED)
    assert [(x.port, x.tls) for x in v.listeners] == [(8000, ())]
    assert "dropped" in caplog.text and "AUTO_PASSTHROUGH" in caplog.text


@pytest.mark.parametrize(("version", "expected"), [("TLS_AUTO", ""), ("TLSV1_2", "TLSV1_2"), ("TLSV1_0", "")])
def test_min_protocol_version(version, expected):
    config = GATEWAY.replace("minProtocolVersion: TLSV1_3", f"minProtocolVersion: {version}")
    assert listener(gateway_view(config), 443).tls[0].min_protocol == expected


@pytest.mark.parametrize(("version", "expected"), [("TLS_AUTO", ""), ("TLSV1_3", "TLSV1_3"), ("TLSV1_1", "TLSV1_2")])
def test_max_protocol_version(version, expected):
    """Weir's gateway serves TLS 1.2 and 1.3: an older maximum reads as TLS 1.2 (analyze warns)."""
    config = GATEWAY.replace("minProtocolVersion: TLSV1_3", f"maxProtocolVersion: {version}")
    assert listener(gateway_view(config), 443).tls[0].max_protocol == expected


SPKI_B64 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="  # base64 of SHA-256("")


def test_cipher_suites_in_effect_and_pins_of_mutual_servers():
    config = GATEWAY.replace("subjectAltNames: [client.example.com]}", (
        "subjectAltNames: [client.example.com],\n"
        "          cipherSuites: [AES128-SHA, '[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]', "
        "'!RC4', AES128-SHA, NO-SUCH-SUITE],\n"
        f"          verifyCertificateSpki: ['{SPKI_B64}'], verifyCertificateHash: ['AB:CD{':00' * 30}']}}"))
    mutual = listener(gateway_view(config), 443).tls[1]
    assert mutual.cipher_suites == ("AES128-SHA", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305")
    assert mutual.spki_sha256 == (hashlib.sha256(b"").hexdigest(),)
    assert mutual.cert_sha256 == ("abcd" + "00" * 30,)
    simple_pins = GATEWAY.replace("minProtocolVersion: TLSV1_3", f"verifyCertificateSpki: ['{SPKI_B64}']")
    assert listener(gateway_view(simple_pins), 443).tls[0].spki_sha256 == ()  # no client certificate to pin
    istio = GATEWAY.replace("tls: {mode: MUTUAL, credentialName: ratings-cred, subjectAltNames: [client.example.com]}",
                            "tls: {mode: ISTIO_MUTUAL, cipherSuites: [AES128-SHA]}")
    assert listener(gateway_view(istio), 443).tls[1].cipher_suites == ()  # the workload context's own (warned)


def test_sidecars_get_no_gateway_tls():
    v = view(GATEWAY, sidecar())
    assert all(x.tls == () and not x.https_redirect for x in v.listeners)


OPTIONAL_MUTUAL = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-cred, protocol: HTTPS}
    hosts: ["partners.example.com"]
    tls: {mode: OPTIONAL_MUTUAL, credentialName: partners, subjectAltNames: [partner.example.com]}
  - port: {number: 8443, name: https-files, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: OPTIONAL_MUTUAL, serverCertificate: /c/s.crt, privateKey: /c/s.key, caCertificates: /c/ca.crt}
  - port: {number: 9443, name: https-no-ca, protocol: HTTPS}
    hosts: ["*"]
    tls:
      mode: OPTIONAL_MUTUAL
      tlsCertificates: [{serverCertificate: /c/s.crt, privateKey: /c/s.key}]
---
""" + GATEWAY.split("---\n", 1)[1]


def test_optional_mutual_asks_for_a_client_certificate_verified_against_its_ca(caplog):
    """Istio: OPTIONAL_MUTUAL requests a client certificate and verifies one that is sent, against the
    server's CA and subjectAltNames; clients without one are let in (the proxy enforces that part)."""
    with caplog.at_level(logging.WARNING, logger="mesh.control.tls"):
        v = gateway_view(OPTIONAL_MUTUAL)
    assert listener(v, 443).tls == (
        model.ServerTls(mode="OPTIONAL_MUTUAL", hosts=("partners.example.com",),
                        cert_file="/var/weir/credentials/partners/tls.crt",
                        key_file="/var/weir/credentials/partners/tls.key",
                        ca_file="/var/weir/credentials/partners/ca.crt",
                        subject_alt_names=("partner.example.com",)),
    )
    assert listener(v, 8443).tls == (
        model.ServerTls(mode="OPTIONAL_MUTUAL", hosts=("*",), cert_file="/c/s.crt", key_file="/c/s.key",
                        ca_file="/c/ca.crt"),
    )
    # No roots to verify a client certificate against: none is asked for (SIMPLE), as Envoy does, and said.
    assert listener(v, 9443).tls == (
        model.ServerTls(mode="SIMPLE", hosts=("*",), cert_file="/c/s.crt", key_file="/c/s.key"),
    )
    assert "OPTIONAL_MUTUAL without caCertificates" in caplog.text
    assert "9443" in caplog.text and "8443" not in caplog.text


def test_gateway_listeners_are_the_servers_analyze_does_not_warn_about():
    """`mesh.api.dropped_server` is the one list: the servers analyze warns are not served (WEIR0001) are
    exactly those that get no listener."""
    resources = snap(GATEWAY).resources
    (gw,) = [r for r in resources if r.kind == "Gateway"]
    warned = {m.text.split(" ", 1)[0] for m in api.analyze(resources)
              if m.code == "WEIR0001" and "this server is not served" in m.text}
    dropped = {f"spec.servers[{i}]" for i, s in enumerate(gw.spec.servers) if api.dropped_server(s)}
    assert {w.rsplit(".", 2)[0] for w in warned} == dropped == {"spec.servers[4]"}  # the PASSTHROUGH one
    served = {s.port.number for s in gw.spec.servers if api.dropped_server(s) is None}
    assert {x.port for x in gateway_view().listeners} == served
