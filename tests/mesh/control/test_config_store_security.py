"""The config store and the security kinds: they apply like any kind, but a CUSTOM AuthorizationPolicy
(valid Istio, which Weir cannot enforce) is refused on apply and never replaces running config."""

from __future__ import annotations

import pytest

import mesh.api as api
from mesh.control import config_store

ALLOW = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: books, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: books}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/bookinfo/sa/gw"]}}]
"""
CUSTOM = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: books, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: books}}
  action: CUSTOM
  provider: {name: ext-authz}
  rules:
  - to: [{operation: {paths: ["/admin/*"]}}]
"""
STRICT = """
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: bookinfo}
spec: {mtls: {mode: STRICT}}
"""
KEY = "AuthorizationPolicy/bookinfo/books"


def test_security_kinds_apply_and_persist(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    result = store.apply([("authz.yaml", ALLOW + "---" + STRICT)])
    assert {c.key: c.action for c in result.changes} == {
        KEY: "created",
        "PeerAuthentication/bookinfo/default": "created",
    }
    restarted = config_store.ConfigStore(tmp_path)
    assert sorted(restarted.load_persisted()) == sorted(r.key for r in store.resources())
    assert restarted.resources() == store.resources()


def test_custom_action_is_refused_on_apply_and_old_config_kept(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    store.apply([("allow.yaml", ALLOW)])
    before, revision = store.resources(), store.revision
    persisted = sorted(p.read_text() for p in (tmp_path / "config").iterdir())
    with pytest.raises(api.ConfigError) as info:
        store.apply([("pa.yaml", STRICT), ("custom.yaml", CUSTOM)])
    assert str(info.value) == (
        f"custom.yaml: {KEY}: spec.action: CUSTOM (external authorization) is not supported by Weir"
    )
    assert store.resources() == before and store.revision == revision
    assert sorted(p.read_text() for p in (tmp_path / "config").iterdir()) == persisted
    assert store.get(KEY).spec.action == "ALLOW"


def test_custom_action_is_refused_in_a_dry_run_too(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    with pytest.raises(api.ConfigError, match="CUSTOM"):
        store.apply([("custom.yaml", CUSTOM)], dry_run=True)


def test_custom_action_in_config_files_stops_the_load(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(CUSTOM)
    store = config_store.ConfigStore(tmp_path / "state")
    with pytest.raises(api.ConfigError, match="not supported by Weir") as info:
        store.load_files([path])
    assert info.value.file == str(path)
    assert store.resources() == ()


def test_persisted_custom_policy_is_skipped(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / config_store.filename_for(KEY)).write_text(CUSTOM)
    store = config_store.ConfigStore(tmp_path)
    assert store.load_persisted() == [] and store.resources() == ()


def test_a_custom_policy_file_still_validates_and_deletes(tmp_path):
    # `meshctl validate` reads through mesh.api alone, like `istioctl validate`: CUSTOM is valid Istio.
    (policy,) = api.load_text(CUSTOM, "custom.yaml")
    assert policy.spec.action == "CUSTOM"
    store = config_store.ConfigStore(tmp_path)
    assert store.delete([("custom.yaml", CUSTOM)]).not_found == (KEY,)
