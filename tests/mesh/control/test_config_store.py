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
    corsPolicy: {allowOrigins: [{exact: "https://x"}]}
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
    assert text.count("corsPolicy") == 1  # parsed but not enforced: said once, with its field path
    result = store.apply([("both.yaml", VS + "---" + DR)], default_namespace="bookinfo")
    assert {c.key: c.action for c in result.changes} == {
        "VirtualService/bookinfo/books": "unchanged", "DestinationRule/bookinfo/books": "created"}
    assert "IST0101" not in "\n".join(result.warnings)
    assert store.revision == 2


def test_dry_run_changes_nothing(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    result = store.apply([("vs.yaml", VS)], dry_run=True)
    assert result.keys == ["VirtualService/bookinfo/books"] and store.resources() == ()


def test_persisted_and_reloaded_by_a_new_store(tmp_path):
    store = config_store.ConfigStore(tmp_path)
    store.apply([("x.yaml", VS + "---" + DR)])
    files = sorted(p.name for p in (tmp_path / "config").iterdir())
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
