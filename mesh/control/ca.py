"""The mesh certificate authority (Istio's Citadel): a root, or an intermediate under an operator's root,
that signs workload certificates with SPIFFE identities from CSRs, and the control plane's serving cert.

Signing is pure: `sign_workload(csr_pem, spiffe_id)` checks the CSR (its signature, a key type we accept)
and returns the PEM chain; the caller has authenticated who may ask for `spiffe_id` (mesh.control.authn).
The SPIFFE ID is the caller's (mesh.control.certificates refuses a CSR asking for another one); this module never reads the CSR's SANs.
Keys are EC P-256 (a proxy makes its own key and CSR: `mesh.proxy.certagent.make_csr`). Storage (0600 key file, or a Kubernetes Secret) is `mesh.control.ca_store`'s job.

Example:
    ca = CertificateAuthority.create_root(now=clock())
    chain = ca.sign_workload(csr_pem, "spiffe://cluster.local/ns/bookinfo/sa/books", now=clock())
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_WORKLOAD_TTL_S = 24 * 3600.0  # Istio's default workload certificate lifetime
MAX_WORKLOAD_TTL_S = 90 * 24 * 3600.0  # Istio's MAX_WORKLOAD_CERT_TTL
ROOT_TTL_S = 10 * 365 * 24 * 3600.0  # Istio's self-signed root: 10 years
# A freshly issued certificate is valid from a little before now: clocks of proxies may lag the CA's.
BACKDATE_S = 60.0
ORGANIZATION = "Weir"
MIN_RSA_BITS = 2048


class CAError(Exception):
    """A CSR or key material the CA refuses; the message says why (answered with 400)."""


def _utc(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertificateAuthority:
    """The signing key and certificate, and the chain up to (and including) the root."""

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuers above `cert`, ending with the root; empty for a root CA
    workload_ttl_s: float = DEFAULT_WORKLOAD_TTL_S

    @classmethod
    def create_root(cls, *, now: float, trust_domain: str = "cluster.local",
                    workload_ttl_s: float = DEFAULT_WORKLOAD_TTL_S) -> CertificateAuthority:
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                          x509.NameAttribute(NameOID.COMMON_NAME, "Weir mesh root CA")])
        cert = _ca_cert(name, key.public_key(), name, key, now, ROOT_TTL_S)
        return cls(key, cert, (), workload_ttl_s)

    @classmethod
    def create_intermediate(cls, root_key, root_cert: x509.Certificate, *, now: float,
                            workload_ttl_s: float = DEFAULT_WORKLOAD_TTL_S) -> CertificateAuthority:
        """An intermediate signed by an operator-supplied root (Istio's "plug in CA certificates")."""
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                          x509.NameAttribute(NameOID.COMMON_NAME, "Weir mesh intermediate CA")])
        remaining = root_cert.not_valid_after_utc.timestamp() - now
        cert = _ca_cert(name, key.public_key(), root_cert.subject, root_key, now, min(ROOT_TTL_S / 2, remaining))
        return cls(key, cert, (root_cert,), workload_ttl_s)

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1] if self.chain else self.cert

    @property
    def root_pem(self) -> bytes:
        return cert_pem(self.root)

    def chain_pem(self) -> bytes:
        """This CA's certificate and its issuers: appended after a leaf to make the chain a peer sends."""
        return b"".join(cert_pem(c) for c in (self.cert, *self.chain[:-1])) if self.chain else b""

    def sign_workload(self, csr_pem: bytes, spiffe_id: str, *, now: float, ttl_s: float | None = None) -> bytes:
        """Leaf for `spiffe_id` (client and server auth), then the intermediates; not the root."""
        csr = _load_csr(csr_pem)
        ttl = min(ttl_s if ttl_s is not None else self.workload_ttl_s, MAX_WORKLOAD_TTL_S)
        if ttl <= 0:
            raise CAError(f"certificate lifetime must be positive, got {ttl} s")
        builder = (self._leaf(csr.public_key(), now, ttl)
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]))
                   .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                                  critical=True)  # empty subject: RFC 5280 wants the SAN critical
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        return cert_pem(builder.sign(self.key, hashes.SHA256())) + self.chain_pem()

    def issue_server(self, hosts: Sequence[str], *, now: float, ttl_s: float | None = None) -> tuple[bytes, bytes]:
        """(chain PEM, key PEM) for a TLS server reachable as `hosts` (DNS names or IP addresses): the
        control plane's own serving certificate, which proxies check against the mesh root."""
        key = new_key()
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = (self._leaf(key.public_key(), now, ttl_s or self.workload_ttl_s)
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        return cert_pem(builder.sign(self.key, hashes.SHA256())) + self.chain_pem(), key_pem(key)

    def _leaf(self, public_key, now: float, ttl: float) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder()
                .issuer_name(self.cert.subject)
                .public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(_utc(now - BACKDATE_S))
                .not_valid_after(_utc(now + ttl))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False),
                               critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False))


def _ca_cert(subject: x509.Name, public_key, issuer: x509.Name, issuer_key, now: float, ttl: float) -> x509.Certificate:
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - BACKDATE_S)).not_valid_after(_utc(now + ttl))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(issuer_key, hashes.SHA256()))


def load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """The CSR if the CA would sign it (parsed, signature checked, key type accepted), else CAError."""
    return _load_csr(csr_pem)


def _load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CAError(f"not a PEM certificate signing request: {exc}") from None
    try:
        if not csr.is_signature_valid:
            raise CAError("the CSR's signature does not verify")
    except InvalidSignature:
        raise CAError("the CSR's signature does not verify") from None
    public_key = csr.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise CAError(f"RSA keys must have at least {MIN_RSA_BITS} bits, got {public_key.key_size}")
    elif not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise CAError(f"unsupported key type {type(public_key).__name__}; use EC P-256 or RSA")
    return csr
