"""The loader: multi-document YAML, namespaces, envelope fields, syntax errors, files and kinds."""

from __future__ import annotations

import pytest

from mesh.api import ConfigError, VirtualService, dump, load_document, load_files, load_text
from tests.mesh.api.conftest import FILE, doc, dr, route_to, to_yaml, vs

VS_TEXT = to_yaml(vs([{"route": [route_to()]}]))


def test_multi_document_skips_empty_and_null_documents() -> None:
    text = f"---\n{VS_TEXT}---\n# only a comment\n---\n~\n---\nnull\n---\n{to_yaml(dr())}---\n"
    assert [r.key for r in load_text(text, FILE)] == [
        "VirtualService/bookinfo/reviews",
        "DestinationRule/bookinfo/reviews",
    ]


def test_empty_text_is_no_resources() -> None:
    assert load_text("") == []
    assert load_text("---\n---\n") == []


@pytest.mark.parametrize(
    ("given", "default", "expected"),
    [
        (None, None, "default"),
        (None, "bookinfo", "bookinfo"),
        ("prod", "bookinfo", "prod"),
    ],
)
def test_namespace_defaults(given: str | None, default: str | None, expected: str) -> None:
    body = doc("VirtualService", {"hosts": ["r"], "http": [{"route": [route_to()]}]}, namespace=given)
    (res,) = load_text(to_yaml(body), default_namespace=default)
    assert res.metadata.namespace == expected
    assert res.key == f"VirtualService/{expected}/reviews"


def test_server_side_metadata_and_status_are_tolerated() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
  uid: 0b8e6c7e-1
  resourceVersion: "123"
  generation: 4
  creationTimestamp: 2024-01-02T03:04:05Z
  labels: {app: reviews}
  annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}
  managedFields: [{manager: kubectl}]
spec:
  host: reviews
status:
  observedGeneration: 4
  conditions: [{type: Reconciled, status: "True"}]
"""
    (res,) = load_text(text)
    assert res.metadata.generation == 4 and res.metadata.labels == {"app": "reviews"}
    assert res.status is not None


def test_yaml_syntax_error_has_line_number() -> None:
    text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: [unclosed\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, FILE)
    assert info.value.file == FILE
    assert "line 5" in info.value.message or "line 4" in info.value.message
    assert str(info.value).startswith(f"{FILE}: invalid YAML: line ")


def test_document_that_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_text("- a\n- b\n", FILE)


def test_quoted_scalars_and_flow_style() -> None:
    text = (
        'apiVersion: "networking.istio.io/v1alpha3"\nkind: "VirtualService"\nmetadata: {name: "r"}\n'
        "spec: {hosts: [r], http: [{route: [{destination: {host: r}}]}]}"
    )
    (res,) = load_text(text)
    assert isinstance(res, VirtualService)


def test_integer_label_and_header_values_become_text() -> None:
    body = dr(subsets=[{"name": "v1", "labels": {"version": 1, "canary": True}}])
    (res,) = load_text(to_yaml(body))
    assert res.spec.subsets[0].labels == {"version": "1", "canary": "true"}


def test_port_given_as_string_is_a_number() -> None:
    body = vs([{"route": [{"destination": {"host": "r", "port": {"number": "9080"}}}]}])
    (res,) = load_text(to_yaml(body))
    assert res.spec.http[0].route[0].destination.port.number == 9080


def test_ipv6_address_in_flow_list() -> None:
    text = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: s}
spec:
  hosts: ["example.com"]
  addresses: [1.2.3.4, 2001:db8::]
"""
    (res,) = load_text(text)
    assert res.spec.addresses == ["1.2.3.4", "2001:db8::"]


def test_load_files_reads_files_and_directories(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text(VS_TEXT)
    sub = tmp_path / "dir"
    sub.mkdir()
    (sub / "b.yml").write_text(to_yaml(dr()))
    (sub / "notes.txt").write_text("not yaml")
    out = load_files([tmp_path / "a.yaml", sub])
    assert [r.kind for r in out] == ["VirtualService", "DestinationRule"]


def test_load_files_names_the_failing_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(to_yaml(dr(subsets=[{"name": "BAD"}])))
    with pytest.raises(ConfigError) as info:
        load_files([bad])
    assert info.value.file == str(bad)


def test_load_files_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_files([tmp_path / "nope.yaml"])


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
@pytest.mark.parametrize("kind", ["PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication"])
def test_security_kinds_load_under_both_versions(kind: str, version: str) -> None:
    body = doc(kind, {}, api_version=f"security.istio.io/{version}")
    (resource,) = load_text(to_yaml(body), FILE)
    assert (type(resource).__name__, resource.key) == (kind, f"{kind}/bookinfo/reviews")
    assert dump(resource)["spec"] == {}


@pytest.mark.parametrize("kind", ["PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication"])
def test_security_kind_without_spec_is_the_empty_policy(kind: str) -> None:
    body = {k: v for k, v in doc(kind, {}, api_version="security.istio.io/v1").items() if k != "spec"}
    (resource,) = load_text(to_yaml(body), FILE)
    assert resource.spec == type(resource.spec)()
    assert load_document(dump(resource)) == resource
