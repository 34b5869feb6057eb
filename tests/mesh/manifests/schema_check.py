"""Test helpers for CRD schemas: the Kubernetes structural-schema rules, and validating custom resources the
way the API server would (pruning + strict field validation: unknown fields refused) with `jsonschema`."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from mesh.manifests import crds

# JSONSchemaProps fields of apiextensions.k8s.io/v1 (what an openAPIV3Schema node may contain).
ALLOWED = {
    "description", "type", "format", "title", "default", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
    "multipleOf", "enum", "maxProperties", "minProperties", "required", "items", "allOf", "oneOf", "anyOf",
    "not", "properties", "additionalProperties", "nullable", "example", "externalDocs",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-validations",
}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")


def structural_errors(schema: dict[str, Any], path: str = "", root: bool = True) -> list[str]:
    """Every violation of "Specifying a structural schema" (and of the JSONSchemaProps field set)."""
    errors = [f"{path}: unknown keyword {key}" for key in schema if key not in ALLOWED]
    free = schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string")
    if schema.get("type") not in TYPES and not (free and "type" not in schema):
        errors.append(f"{path}: no valid type ({schema.get('type')!r})")
    if root and schema.get("type") != "object":
        errors.append(f"{path}: the root must be an object")
    if schema.get("x-kubernetes-preserve-unknown-fields") not in (None, True):
        errors.append(f"{path}: x-kubernetes-preserve-unknown-fields must be true")
    if "properties" in schema and "additionalProperties" in schema:
        errors.append(f"{path}: properties and additionalProperties are mutually exclusive")
    extra = schema.get("additionalProperties")
    if extra is not None and not isinstance(extra, dict):
        errors.append(f"{path}: additionalProperties must be a schema")
    if schema.get("type") == "array" and not isinstance(schema.get("items"), dict):
        errors.append(f"{path}: an array needs one items schema")
    for junctor in JUNCTORS:
        if junctor in schema:  # Weir's schemas use none; a junctor would need the outside spec as well
            errors.append(f"{path}: {junctor} present")
    for name, sub in (schema.get("properties") or {}).items():
        errors += structural_errors(sub, f"{path}.{name}", False)
    if isinstance(extra, dict):
        errors += structural_errors(extra, f"{path}.*", False)
    if isinstance(schema.get("items"), dict):
        errors += structural_errors(schema["items"], f"{path}[]", False)
    if root and (schema.get("properties") or {}).get("metadata") not in (None, {"type": "object"}):
        errors.append(f"{path}.metadata: only name/generateName restrictions are allowed")
    return errors


def to_jsonschema(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI (Kubernetes dialect) → JSON Schema; closed objects as the API server's pruning makes them."""
    out = copy.deepcopy(schema)
    if out.pop("x-kubernetes-int-or-string", False):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    out.pop("x-kubernetes-preserve-unknown-fields", None)
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "anyOf" in out:
            out["anyOf"].append({"type": "null"})
    if "properties" in out:
        out["properties"] = {name: to_jsonschema(sub) for name, sub in out["properties"].items()}
        out["additionalProperties"] = False
    elif isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = to_jsonschema(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = to_jsonschema(out["items"])
    return out


def crd_for(obj: dict[str, Any], crd_list: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The CRD serving this object's group/kind, and the version entry of its apiVersion."""
    group, _, version = obj["apiVersion"].partition("/")
    for crd in crd_list:
        if crd["kind"] == "CustomResourceDefinition" and (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == (group, obj["kind"]):
            entry = next((v for v in crd["spec"]["versions"] if v["name"] == version), None)
            assert entry is not None and entry["served"], f"{obj['apiVersion']} {obj['kind']} is not served"
            return crd, entry
    raise AssertionError(f"no CRD for {obj['apiVersion']} {obj['kind']}")


def cr_errors(obj: dict[str, Any], crd_list: list[dict[str, Any]] | None = None) -> list[str]:
    """Schema errors of a custom resource against its CRD (an empty list when valid)."""
    _, entry = crd_for(obj, crd_list or crds.all_crds())
    validator = jsonschema.Draft7Validator(to_jsonschema(entry["schema"]["openAPIV3Schema"]))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
