"""Where the mesh CA's key and certificates are kept: a local directory, or a Kubernetes Secret.

Both hold Istio's `cacerts` files: `ca-cert.pem` (the signing certificate), `ca-key.pem`, `root-cert.pem`
(what proxies trust) and `cert-chain.pem` (ca-cert and its issuers up to the root). A store loads them into
a `mesh.control.ca.CertificateAuthority` after checking them (key fits the certificate, each link is
signed by the next, nothing expired), or creates a new CA on first start and keeps it for the next ones.

- `LocalStore`: `<state-dir>/ca/` (0700); the key file is 0600 and the store refuses to start when an
  existing one is readable by group or others. An operator's root (`--ca-root-cert/--ca-root-key`) makes
  the CA an intermediate under it (Istio's "plug in CA certificates").
- `KubernetesStore`: the Secret `weir-system/weir-ca` through `mesh.control.kube`; a Secret the operator
  created first (their own intermediate) is used as is.

Next: `mesh.control.certificates` signs with the loaded CA.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from mesh.control import ca as ca_mod
from mesh.control import kube
from mesh.control.private import KEY_MODE, ensure_private_dir, write_file

log = logging.getLogger(__name__)

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"
REQUIRED = (CA_CERT, CA_KEY, ROOT_CERT)
SECRET_NAMESPACE = "weir-system"
SECRET_NAME = "weir-ca"


class CAStoreError(Exception):
    """CA material that cannot be used, or a store that cannot be read; the control plane does not start."""


# -- files <-> CertificateAuthority --------------------------------------------------------------------


def to_files(authority: ca_mod.CertificateAuthority) -> dict[str, bytes]:
    chain = ca_mod.cert_pem(authority.cert) + b"".join(ca_mod.cert_pem(c) for c in authority.chain)
    return {CA_CERT: ca_mod.cert_pem(authority.cert), CA_KEY: ca_mod.key_pem(authority.key),
            ROOT_CERT: authority.root_pem, CERT_CHAIN: chain}


def from_files(files: Mapping[str, bytes], *, now: float, workload_ttl_s: float,
               where: str) -> ca_mod.CertificateAuthority:
    """The CA in `files` (names as above), checked; `where` names the store in errors."""
    missing = [name for name in REQUIRED if not files.get(name)]
    if missing:
        raise CAStoreError(f"{where}: incomplete CA, missing {', '.join(missing)}")
    key = _load_key(files[CA_KEY], f"{where}/{CA_KEY}")
    cert = _load_certs(files[CA_CERT], f"{where}/{CA_CERT}")[0]
    root = _load_certs(files[ROOT_CERT], f"{where}/{ROOT_CERT}")[0]
    listed = _load_certs(files.get(CERT_CHAIN) or files[CA_CERT], f"{where}/{CERT_CHAIN}")
    issuers = listed[1:] if listed[0] == cert else listed
    chain: tuple[x509.Certificate, ...] = ()
    if cert != root:
        chain = tuple(issuers) if issuers and issuers[-1] == root else (*issuers, root)
    authority = ca_mod.CertificateAuthority(key, cert, chain, workload_ttl_s)
    check(authority, now=now, where=where)
    return authority


def check(authority: ca_mod.CertificateAuthority, *, now: float, where: str) -> None:
    """Key fits certificate, the certificate is a CA, every link is signed by the next, all valid now."""
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (authority.key.public_key().public_bytes(serialization.Encoding.DER, public)
            != authority.cert.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise CAStoreError(f"{where}: {CA_KEY} is not the key of {CA_CERT}")
    links = (authority.cert, *authority.chain)
    for cert in links:
        _check_ca_cert(cert, now, where)
    for cert, issuer in zip(links, (*authority.chain, authority.root)):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise CAStoreError(f"{where}: {cert.subject.rfc4514_string()} is not signed by "
                               f"{issuer.subject.rfc4514_string()}") from None


def _check_ca_cert(cert: x509.Certificate, now: float, where: str) -> None:
    name = cert.subject.rfc4514_string()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CAStoreError(f"{where}: {name} is not a CA certificate (basicConstraints CA:TRUE missing)")
    if not cert.not_valid_before_utc.timestamp() <= now < cert.not_valid_after_utc.timestamp():
        raise CAStoreError(f"{where}: {name} is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} "
                           f"to {cert.not_valid_after_utc:%Y-%m-%d})")


def _load_key(data: bytes, where: str):
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CAStoreError(f"{where}: not an unencrypted PEM private key ({exc})") from None


def _load_certs(data: bytes, where: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CAStoreError(f"{where}: not PEM certificates ({exc})") from None
    if not certs:
        raise CAStoreError(f"{where}: no certificate in it")
    return certs


# -- local directory -----------------------------------------------------------------------------------


def check_private(path: Path) -> None:
    """Refuse a key file that group or others may read (or write)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise CAStoreError(f"{path} is accessible by group or others (mode {mode:04o}): refusing to use a CA "
                           f"key others can read; run `chmod 600 {path}`")


def load_operator_root(cert_file: Path, key_file: Path, *, now: float):
    """(key, certificate) of an operator-supplied root, checked like the store's own files."""
    check_private(key_file)
    key = _load_key(key_file.read_bytes(), str(key_file))
    cert = _load_certs(cert_file.read_bytes(), str(cert_file))[0]
    check(ca_mod.CertificateAuthority(key, cert, ()), now=now, where=str(cert_file))
    return key, cert


class LocalStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def load_or_create(self, *, now: float, workload_ttl_s: float = ca_mod.DEFAULT_WORKLOAD_TTL_S,
                       root_cert_file: Path | None = None,
                       root_key_file: Path | None = None) -> ca_mod.CertificateAuthority:
        ensure_private_dir(self.directory)  # ours: a directory made by an older version is tightened
        operator = (load_operator_root(Path(root_cert_file), Path(root_key_file), now=now)
                    if root_cert_file and root_key_file else None)
        if any((self.directory / name).exists() for name in (*REQUIRED, CERT_CHAIN)):
            if (self.directory / CA_KEY).exists():
                check_private(self.directory / CA_KEY)
            authority = from_files(self._read(), now=now, workload_ttl_s=workload_ttl_s, where=str(self.directory))
            if operator is None or authority.root == operator[1]:
                log.info("mesh CA loaded from %s: %s", self.directory, authority.cert.subject.rfc4514_string())
                return authority
            log.warning("the operator's root differs from the one in %s: issuing a new intermediate; proxies "
                        "trusting the old root must restart", self.directory)
        if operator is None:
            authority = ca_mod.CertificateAuthority.create_root(now=now, workload_ttl_s=workload_ttl_s)
        else:
            authority = ca_mod.CertificateAuthority.create_intermediate(*operator, now=now,
                                                                        workload_ttl_s=workload_ttl_s)
        self._write(to_files(authority))
        log.info("mesh CA created in %s: %s", self.directory, authority.cert.subject.rfc4514_string())
        return authority

    def _read(self) -> dict[str, bytes]:
        return {name: (self.directory / name).read_bytes()
                for name in (*REQUIRED, CERT_CHAIN) if (self.directory / name).exists()}

    def _write(self, files: Mapping[str, bytes]) -> None:
        for name in (CA_KEY, CA_CERT, CERT_CHAIN, ROOT_CERT):  # root last: its presence means "complete"
            write_file(self.directory / name, files[name], KEY_MODE if name == CA_KEY else 0o644)


# -- Kubernetes Secret ---------------------------------------------------------------------------------


class KubernetesStore:
    def __init__(self, transport: kube.Transport, namespace: str = SECRET_NAMESPACE, name: str = SECRET_NAME):
        self.transport = transport
        self.namespace = namespace
        self.name = name

    @property
    def where(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    async def load_or_create(self, *, now: float,
                             workload_ttl_s: float = ca_mod.DEFAULT_WORKLOAD_TTL_S) -> ca_mod.CertificateAuthority:
        collection = f"/api/v1/namespaces/{self.namespace}/secrets"
        status, doc = await self._call("GET", f"{collection}/{self.name}", None)
        if status == 200:
            return from_files(self._decode(doc), now=now, workload_ttl_s=workload_ttl_s, where=self.where)
        if status != 404:
            raise CAStoreError(f"reading {self.where}: {kube.status_message(status, doc)}")
        authority = ca_mod.CertificateAuthority.create_root(now=now, workload_ttl_s=workload_ttl_s)
        status, doc = await self._call("POST", collection, self.secret(authority))
        if status in (200, 201):
            log.info("mesh CA created in %s", self.where)
            return authority
        if status == 409:  # another control plane replica created it first: use theirs
            status, doc = await self._call("GET", f"{collection}/{self.name}", None)
            if status == 200:
                return from_files(self._decode(doc), now=now, workload_ttl_s=workload_ttl_s, where=self.where)
        raise CAStoreError(f"creating {self.where}: {kube.status_message(status, doc)}")

    def secret(self, authority: ca_mod.CertificateAuthority) -> dict:
        data = {name: base64.b64encode(value).decode() for name, value in to_files(authority).items()}
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/managed-by": "weir", "app.kubernetes.io/part-of": "weir"}}}

    async def _call(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        try:
            return await self.transport(method, path, body)
        except kube.KubeError as exc:
            raise CAStoreError(f"{self.where}: {exc}") from None

    def _decode(self, doc: dict) -> dict[str, bytes]:
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, dict):
            raise CAStoreError(f"{self.where}: no data in the Secret")
        try:
            return {name: base64.b64decode(value, validate=True) for name, value in data.items()
                    if name in (*REQUIRED, CERT_CHAIN)}
        except (ValueError, TypeError):
            raise CAStoreError(f"{self.where}: data that is not base64") from None
