"""The config store: all-or-nothing apply, warnings, delete, persistence across restarts."""

from __future__ import annotations

import pytest

import mesh.api as api
from mesh.control import config_store

VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: books, namespace: bookinfo}
spec:
  hosts: [books]
  http:
  - route: [{destination: {host: books, subset: v1}}]
    retries: {attempts: 2, retryRemoteLocalities: true}
"""
DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: books}
spec:
  host: books
  subsets: [{name: v1, labels: {version: v1}}]
"""
BAD = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: broken, namespace: bookinfo}
spec:
  host: books
  subsets: [{name: v1}, {name: v1}]
"""


def test_apply_is_all_or_nothing(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    events = []
    store.subscribe(lambda: events.append(1))
    with pytest.raises(api.ConfigError) as err:
        store.apply([("a.yaml", VS), ("b.yaml", BAD)])
    assert "b.yaml" in str(err.value) and "DestinationRule/bookinfo/broken" in str(err.value)
    assert store.resources() == () and events == [] and not (tmp_path / "config").exists()


def test_apply_reports_changes_and_warnings(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    result = store.apply([("vs.yaml", VS)])
    assert [(c.key, c.action) for c in result.changes] == [("VirtualService/bookinfo/books", "created")]
    text = "\n".join(result.warnings)
    assert "IST0101" in text  # subset v1 not defined yet
    assert text.count("retryRemoteLocalities") == 1  # parsed but not enforced: said once, with its field path
    result = store.apply([("both.yaml", VS + "---" + DR)], default_namespace="bookinfo")
    assert {c.key: c.action for c in result.changes} == {
        "VirtualService/bookinfo/books": "unchanged", "DestinationRule/bookinfo/books": "created"}
    assert "IST0101" not in "\n".join(result.warnings)
    assert store.revision == 2


def test_apply_warns_about_gateway_servers_and_service_entry_ports_weir_cannot_serve(tmp_path):
    text = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: bookinfo}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
"""
    result = config_store.ConfigStore(tmp_path).apply([("edge.yaml", text)])
    assert {c.key for c in result.changes} == {"Gateway/bookinfo/edge", "ServiceEntry/bookinfo/ext"}  # applied
    warned = [w for w in result.warnings if "WEIR0001" in w]
    assert len(warned) == 2
    assert any("spec.servers[1].tls.mode PASSTHROUGH" in w for w in warned)
    assert any("spec.ports[0].protocol TLS" in w for w in warned)


def test_dry_run_changes_nothing(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    result = store.apply([("vs.yaml", VS)], dry_run=True)
    assert result.keys == ["VirtualService/bookinfo/books"] and store.resources() == ()


def test_persisted_and_reloaded_by_a_new_store(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    store.apply([("x.yaml", VS + "---" + DR)])
    files = sorted(p.name for p in (tmp_path / "config").glob("*.yaml"))
    assert files == ["DestinationRule_default_books.yaml", "VirtualService_bookinfo_books.yaml"]
    again = config_store.ConfigStore(tmp_path)
    assert again.load_persisted() == ["DestinationRule/default/books", "VirtualService/bookinfo/books"]
    assert again.resources() == store.resources()
    store.delete([("x.yaml", DR)])
    third = config_store.ConfigStore(tmp_path)
    third.load_persisted()
    assert [r.key for r in third.resources()] == ["VirtualService/bookinfo/books"]


def test_bad_persisted_file_is_skipped(tmp_path, caplog):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "VirtualService_bookinfo_x.yaml").write_text("kind: Nope\n")
    store = config_store.ConfigStore(tmp_path)
    assert store.load_persisted() == [] and "skipped" in caplog.text


def test_delete_and_select(tmp_path):
    store = config_store.ConfigStore(None)
    store.apply([("x.yaml", VS + "---" + DR)])
    assert [r.name for r in store.select("vs")] == ["books"]
    assert [r.kind for r in store.select("DestinationRules")] == ["DestinationRule"]
    result = store.delete([("x.yaml", DR)], default_namespace="bookinfo")
    assert result.not_found == ("DestinationRule/bookinfo/books",) and result.deleted == ()
    result = store.delete_keys(["DestinationRule/default/books"])
    assert result.deleted == ("DestinationRule/default/books",)


def test_initial_files(tmp_path):
    path = tmp_path / "routing.yaml"
    path.write_text(VS)
    store = config_store.ConfigStore(tmp_path)
    assert store.load_files([path]) == ["VirtualService/bookinfo/books"]
    path.write_text(BAD)
    with pytest.raises(api.ConfigError):
        config_store.ConfigStore(tmp_path).load_files([path])


@pytest.mark.parametrize(("kind", "normal"), [
    ("vs", "virtualservice"), ("VirtualServices", "virtualservice"), ("gateways", "gateway"),
    ("serviceentries", "serviceentry"), ("ServiceEntry", "serviceentry"), ("authorizationpolicies", "authorizationpolicy"),
])
def test_kind_plurals_and_aliases(kind, normal):
    assert config_store.normalize_kind(kind) == normal


def test_replace_makes_the_batch_the_whole_set_in_one_change_and_labels_it(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    store.apply([("x.yaml", VS + "---" + DR)])
    notified = []
    store.subscribe(lambda: notified.append(store.revision))
    result = store.apply([("release.yaml", VS)], replace=True, label={"release": "books@v2", "digest": "sha256:x"})
    assert [(c.key, c.action) for c in result.changes] == [
        ("VirtualService/bookinfo/books", config_store.UNCHANGED), ("DestinationRule/default/books", "deleted")]
    assert [r.key for r in store.resources()] == ["VirtualService/bookinfo/books"]
    assert len(notified) == 1 and store.label == {"release": "books@v2", "digest": "sha256:x"}
    again = config_store.ConfigStore(tmp_path)
    again.load_persisted()
    assert [r.key for r in again.resources()] == ["VirtualService/bookinfo/books"]
    assert again.label == store.label


def test_a_change_outside_a_release_clears_its_label_and_a_no_op_keeps_it(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    store.apply([("release.yaml", VS)], replace=True, label={"release": "books@v1"})
    store.apply([("same.yaml", VS)])
    assert store.label == {"release": "books@v1"}
    store.apply([("more.yaml", DR)])
    assert store.label is None
    store.apply([("release.yaml", VS)], replace=True, label={"release": "books@v1"})
    store.delete_keys(["VirtualService/bookinfo/books"])
    assert store.label is None and store.resources() == ()


def test_a_bad_document_in_a_replacing_apply_changes_nothing(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    store.apply([("x.yaml", VS + "---" + DR)])
    before = store.resources()
    with pytest.raises(api.ConfigError):
        store.apply([("bad.yaml", VS + "---\nkind: Nope\napiVersion: v1\nmetadata: {name: x}\n")], replace=True)
    assert store.resources() == before and store.label is None
