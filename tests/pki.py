"""Test PKI: a mesh CA and workload certificates made with the real CA code (mesh.control.ca)."""

from __future__ import annotations

import time
from pathlib import Path

from mesh.control import ca as ca_mod
from mesh.proxy import certagent, tls
from mesh.view import security


def make_ca(now: float | None = None, ttl_s: float = ca_mod.DEFAULT_WORKLOAD_TTL_S) -> ca_mod.CertificateAuthority:
    return ca_mod.CertificateAuthority.create_root(now=time.time() if now is None else now, workload_ttl_s=ttl_s)


def workload(ca: ca_mod.CertificateAuthority, namespace: str, account: str, *, now: float | None = None,
             ttl_s: float | None = None) -> tuple[bytes, bytes, str]:
    """(chain PEM, key PEM, SPIFFE ID) for a workload, issued from a CSR as a proxy would get it."""
    spiffe = security.spiffe_id(namespace, account)
    key = ca_mod.new_key()
    chain = ca.sign_workload(certagent.make_csr(key, spiffe), spiffe, now=time.time() if now is None else now,
                             ttl_s=ttl_s)
    return chain, ca_mod.key_pem(key), spiffe


def mesh_tls(ca: ca_mod.CertificateAuthority, directory: Path, namespace: str, account: str) -> tls.MeshTls:
    """A proxy's MeshTls with a certificate installed, as after its first CSR."""
    chain, key, spiffe = workload(ca, namespace, account)
    material = tls.MeshTls(directory)
    material.install(chain, key, ca.root_pem, spiffe)
    return material
