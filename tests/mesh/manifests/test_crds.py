"""mesh.manifests.crds: one CRD per kind Weir serves, structural schemas generated from mesh.api that accept
every resource under stacks/routing/ and refuse bad ones."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import mesh.api as api
from mesh.manifests import crds

from .schema_check import cr_errors, structural_errors

ROUTING = Path(__file__).resolve().parents[3] / "stacks" / "routing"
CRD_NAMES = [
    "virtualservices.networking.istio.io", "destinationrules.networking.istio.io",
    "gateways.networking.istio.io", "serviceentries.networking.istio.io",
    "peerauthentications.security.istio.io", "authorizationpolicies.security.istio.io",
    "requestauthentications.security.istio.io",
]  # fmt: skip
ALL = crds.all_crds()


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def test_one_crd_per_kind_with_istio_names_and_versions() -> None:
    assert [crd["metadata"]["name"] for crd in ALL] == CRD_NAMES
    assert [crd["spec"]["names"]["kind"] for crd in ALL] == list(api.KINDS)
    for crd in ALL:
        versions = {v["name"]: (v["served"], v["storage"]) for v in crd["spec"]["versions"]}
        if crd["spec"]["group"] == "networking.istio.io":
            assert versions == {"v1": (True, True), "v1beta1": (True, False), "v1alpha3": (True, False)}
        else:
            assert versions == {"v1": (True, True), "v1beta1": (True, False)}
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"


@pytest.mark.parametrize("crd", ALL, ids=lambda c: c["metadata"]["name"])
def test_crd_validates_against_kubernetes_schema(crd: dict) -> None:
    kubernetes_validate.validate(crd, "1.30", strict=True)


@pytest.mark.parametrize("crd", ALL, ids=lambda c: c["metadata"]["name"])
def test_schema_is_structural(crd: dict) -> None:
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        assert structural_errors(schema) == []
        text = json.dumps(schema)
        assert "$ref" not in text and "$defs" not in text and '"title"' not in text and '"default"' not in text


@pytest.mark.parametrize("name", sorted(p.name for p in ROUTING.glob("*.yaml")))
def test_every_routing_resource_validates_against_its_crd(name: str) -> None:
    docs = _docs(ROUTING / name)
    assert docs
    for doc in docs:
        assert cr_errors(doc) == [], f"{name}: {doc['kind']}/{doc['metadata']['name']}"


def _virtual_service() -> dict:
    return next(d for d in _docs(ROUTING / "ratings-50.yaml") if d["kind"] == "VirtualService"
                and d["metadata"]["name"] == "ratings")


def _destination_rule() -> dict:
    return copy.deepcopy(_docs(ROUTING / "destination-rules.yaml")[-1])


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["spec"].__setitem__("hosts", "ratings"), "hosts: 'ratings' is not of type 'array'"),
    (lambda d: d["spec"]["http"][0]["route"][0].__setitem__("weight", "fifty"), "weight: 'fifty' is not of type"),
    (lambda d: d["spec"]["http"][0].__setitem__("rout", []), "Additional properties are not allowed ('rout'"),
    (lambda d: d["spec"]["http"][0]["route"][0]["destination"].pop("host"), "'host' is a required property"),
], ids=["hosts-not-a-list", "weight-a-string", "unknown-field", "destination-without-host"])
def test_bad_virtual_service_is_refused(change, expected: str) -> None:
    doc = _virtual_service()
    assert cr_errors(doc) == []
    change(doc)
    assert any(expected in error for error in cr_errors(doc)), cr_errors(doc)


def test_bad_destination_rule_is_refused() -> None:
    doc = _destination_rule()
    doc["spec"]["trafficPolicy"]["loadBalancer"]["simple"] = "FASTEST"
    assert any("'FASTEST' is not one of" in error for error in cr_errors(doc))
    doc = _destination_rule()
    doc["spec"]["subsets"][0]["labels"] = {"version": {"nested": "map"}}
    assert any("is not of type 'string'" in error for error in cr_errors(doc))


def test_older_served_versions_use_the_same_schema() -> None:
    doc = _virtual_service()
    doc["apiVersion"] = "networking.istio.io/v1alpha3"
    assert cr_errors(doc) == []
    doc["apiVersion"] = "networking.istio.io/v1alpha1"
    with pytest.raises(AssertionError, match="not served"):
        cr_errors(doc)


def test_structural_translation_rules() -> None:
    schema = {
        "$defs": {"Node": {"type": "object", "title": "Node", "additionalProperties": False,
                           "properties": {"child": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}}}},
        "type": "object",
        "properties": {
            "port": {"anyOf": [{"type": "integer"}, {"type": "string"}], "description": "int or name"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "additionalProperties": True},
            "kind": {"const": "X", "type": "string"},
            "node": {"$ref": "#/$defs/Node"},
            "maybe": {"anyOf": [{"type": "string", "default": "a"}, {"type": "null"}], "default": None},
        },
    }
    out = crds.structural(schema)
    assert out["properties"]["port"] == {"x-kubernetes-int-or-string": True}
    assert out["properties"]["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert out["properties"]["free"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert out["properties"]["kind"] == {"type": "string", "enum": ["X"]}
    assert out["properties"]["maybe"] == {"type": "string", "nullable": True}
    node = out["properties"]["node"]
    assert node["type"] == "object" and "title" not in node and "additionalProperties" not in node
    assert node["properties"]["child"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                           "nullable": True}  # recursion cut
    assert structural_errors(out) == []


def test_structural_checker_catches_violations() -> None:
    bad = {"type": "object", "properties": {"a": {"description": "no type"}, "b": {"$ref": "#/x"},
                                            "c": {"type": "object", "properties": {}, "additionalProperties": {}}}}
    errors = structural_errors(bad)
    assert any(".a: no valid type" in e for e in errors)
    assert any("unknown keyword $ref" in e for e in errors)
    assert any("mutually exclusive" in e for e in errors)
