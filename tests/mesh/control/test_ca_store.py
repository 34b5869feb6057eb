"""The CA's storage: a local 0700 directory with a 0600 key (refused when others can read it), an
operator's root making the CA an intermediate, and the Kubernetes Secret against recorded API answers."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from mesh.control import ca as ca_mod
from mesh.control import ca_store, kube
from mesh.proxy import certagent
from tests import pki
from tests.mesh.control.kubeapi import ScriptedApi, recorded

NOW = time.time()


def mode(path) -> str:
    return oct(path.stat().st_mode & 0o777)


def test_first_start_creates_a_private_ca_and_later_starts_reuse_it(tmp_path):
    store = ca_store.LocalStore(tmp_path / "ca")
    first = store.load_or_create(now=NOW, workload_ttl_s=3600)
    assert mode(tmp_path / "ca") == "0o700" and mode(tmp_path / "ca" / "ca-key.pem") == "0o600"
    assert mode(tmp_path / "ca" / "root-cert.pem") == "0o644"
    assert first.chain == () and first.workload_ttl_s == 3600
    again = ca_store.LocalStore(tmp_path / "ca").load_or_create(now=NOW + 10)
    assert again.cert == first.cert and again.root_pem == (tmp_path / "ca" / "root-cert.pem").read_bytes()


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o660])
def test_a_key_others_can_read_is_refused(tmp_path, loose):
    ca_store.LocalStore(tmp_path).load_or_create(now=NOW)
    (tmp_path / "ca-key.pem").chmod(loose)
    with pytest.raises(ca_store.CAStoreError, match=f"mode {loose:04o}.*chmod 600"):
        ca_store.LocalStore(tmp_path).load_or_create(now=NOW)


def test_a_loose_directory_is_tightened(tmp_path):
    (tmp_path / "ca").mkdir(mode=0o755)
    (tmp_path / "ca").chmod(0o755)
    ca_store.LocalStore(tmp_path / "ca").load_or_create(now=NOW)
    assert mode(tmp_path / "ca") == "0o700"


def test_incomplete_or_mismatched_material_is_refused_never_overwritten(tmp_path):
    ca_store.LocalStore(tmp_path).load_or_create(now=NOW)
    root = (tmp_path / "root-cert.pem").read_bytes()
    (tmp_path / "ca-cert.pem").unlink()
    with pytest.raises(ca_store.CAStoreError, match="incomplete CA, missing ca-cert.pem"):
        ca_store.LocalStore(tmp_path).load_or_create(now=NOW)
    assert (tmp_path / "root-cert.pem").read_bytes() == root
    other = ca_store.to_files(pki.make_ca(now=NOW))
    (tmp_path / "ca-cert.pem").write_bytes(other["ca-cert.pem"])
    with pytest.raises(ca_store.CAStoreError, match="ca-key.pem is not the key of ca-cert.pem"):
        ca_store.LocalStore(tmp_path).load_or_create(now=NOW)


def test_an_expired_ca_is_refused(tmp_path):
    ca_store.LocalStore(tmp_path).load_or_create(now=NOW)
    with pytest.raises(ca_store.CAStoreError, match="not valid now"):
        ca_store.LocalStore(tmp_path).load_or_create(now=NOW + ca_mod.ROOT_TTL_S + 10)


def operator_root(tmp_path, key_mode=0o600):
    root = pki.make_ca(now=NOW)
    (tmp_path / "root.pem").write_bytes(root.root_pem)
    (tmp_path / "root-key.pem").write_bytes(ca_mod.key_pem(root.key))
    (tmp_path / "root-key.pem").chmod(key_mode)
    return root, tmp_path / "root.pem", tmp_path / "root-key.pem"


def test_an_operator_root_makes_the_ca_an_intermediate(tmp_path):
    root, cert_file, key_file = operator_root(tmp_path)
    store = ca_store.LocalStore(tmp_path / "ca")
    authority = store.load_or_create(now=NOW, root_cert_file=cert_file, root_key_file=key_file)
    assert authority.chain == (root.cert,) and authority.cert != root.cert
    assert (tmp_path / "ca" / "root-cert.pem").read_bytes() == root.root_pem
    authority.cert.verify_directly_issued_by(root.cert)
    chain = authority.sign_workload(certagent.make_csr(ca_mod.new_key(), "x"), "spiffe://cluster.local/ns/a/sa/b",
                                    now=NOW)
    assert chain.count(b"BEGIN CERTIFICATE") == 2  # leaf + intermediate: peers hold the root
    again = ca_store.LocalStore(tmp_path / "ca").load_or_create(now=NOW, root_cert_file=cert_file,
                                                                root_key_file=key_file)
    assert again.cert == authority.cert
    (tmp_path / "other").mkdir()
    _, other_cert, other_key = operator_root(tmp_path / "other")
    replaced = ca_store.LocalStore(tmp_path / "ca").load_or_create(now=NOW, root_cert_file=other_cert,
                                                                   root_key_file=other_key)
    assert replaced.root != root.cert and replaced.root_pem == other_cert.read_bytes()


def test_an_operator_root_key_others_can_read_is_refused(tmp_path):
    _, cert_file, key_file = operator_root(tmp_path, key_mode=0o644)
    with pytest.raises(ca_store.CAStoreError, match="root-key.pem is accessible by group or others"):
        ca_store.LocalStore(tmp_path / "ca").load_or_create(now=NOW, root_cert_file=cert_file, root_key_file=key_file)


# -- Kubernetes Secret (recorded API answers) ---------------------------------------------------------------


def secret_with(authority) -> dict:
    doc = recorded("secret_weir_ca")
    doc["data"] = {name: base64.b64encode(value).decode() for name, value in ca_store.to_files(authority).items()}
    return doc


def load(api: ScriptedApi):
    return asyncio.run(ca_store.KubernetesStore(api).load_or_create(now=NOW, workload_ttl_s=7200))


def test_an_existing_secret_is_loaded():
    existing = pki.make_ca(now=NOW)
    api = ScriptedApi((200, secret_with(existing)))
    authority = load(api)
    assert authority.cert == existing.cert and authority.workload_ttl_s == 7200
    assert api.requests == [("GET", "/api/v1/namespaces/weir-system/secrets/weir-ca", None)]


def test_a_missing_secret_is_created_like_istio_cacerts():
    api = ScriptedApi((404, recorded("secret_not_found")), (201, {}))
    authority = load(api)
    method, path, body = api.requests[1]
    assert (method, path) == ("POST", "/api/v1/namespaces/weir-system/secrets")
    assert body["metadata"] == {"name": "weir-ca", "namespace": "weir-system",
                                "labels": {"app.kubernetes.io/managed-by": "weir", "app.kubernetes.io/part-of": "weir"}}
    assert set(body["data"]) == {"ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"}
    assert base64.b64decode(body["data"]["root-cert.pem"]) == authority.root_pem


def test_another_replica_won_the_race_and_its_ca_is_used():
    theirs = pki.make_ca(now=NOW)
    api = ScriptedApi((404, recorded("secret_not_found")), (409, recorded("secret_already_exists")),
                      (200, secret_with(theirs)))
    assert load(api).cert == theirs.cert


@pytest.mark.parametrize(("answers", "message"), [
    ([(403, recorded("secret_forbidden"))], 'reading Secret weir-system/weir-ca: HTTP 403: secrets "weir-ca" is forbidden'),
    ([kube.KubeError("GET /api/v1/...: connection refused")], "connection refused"),
    ([(200, {**recorded("secret_weir_ca"), "data": {"ca-cert.pem": "!!"}})], "not base64"),
    ([(200, recorded("secret_weir_ca"))], "not base64|incomplete|not an unencrypted PEM"),
])
def test_secret_errors_stop_the_start(answers, message):
    with pytest.raises(ca_store.CAStoreError, match=message):
        load(ScriptedApi(*answers))
