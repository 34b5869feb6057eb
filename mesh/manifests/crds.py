"""CustomResourceDefinitions for every kind Weir serves, with structural OpenAPI v3 schemas generated from the
`mesh.api` models (principle 1: the models are the one truth; nothing here restates a field).

`structural(json_schema)` turns pydantic's JSON Schema (by alias) into what the API server accepts
("Specifying a structural schema"): every `$ref` inlined, no `$defs`, `anyOf [X, null]` → X with
`nullable: true`, integer-or-string → `x-kubernetes-int-or-string`, free-form values →
`x-kubernetes-preserve-unknown-fields`, `const` → a one-value `enum`, no titles, defaults or descriptions,
every object typed. Unknown fields are pruned by the API server (and refused by kubectl's strict field
validation), which is what `additionalProperties: false` means in the models.
"""

from __future__ import annotations

from typing import Any

import mesh.api as api
from mesh.api.resource import NETWORKING_VERSIONS, SECURITY_VERSIONS

Obj = dict[str, Any]

CATEGORIES = {"networking.istio.io": ["istio-io", "networking-istio-io"],
              "security.istio.io": ["istio-io", "security-istio-io"]}
SHORT_NAMES = {"VirtualService": ["vs"], "DestinationRule": ["dr"], "Gateway": ["gw"], "ServiceEntry": ["se"],
               "PeerAuthentication": ["pa"], "AuthorizationPolicy": ["ap"], "RequestAuthentication": ["ra"]}
VERSIONS = {"networking.istio.io": NETWORKING_VERSIONS, "security.istio.io": SECURITY_VERSIONS}
STORAGE_VERSION = "v1"
# JSON Schema keywords a structural schema keeps as they are.
_KEEP = ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "enum",
         "required", "format", "multipleOf", "minProperties", "maxProperties")
_FORMATS = {"int32", "int64", "float", "double", "byte", "date", "date-time", "duration", "uri", "email",
            "hostname", "ipv4", "ipv6", "cidr", "uuid", "password", "binary"}
_NULL = {"type": "null"}
_FREE = {"x-kubernetes-preserve-unknown-fields": True}


def plural(kind: str) -> str:
    """Istio's plurals: virtualservices, authorizationpolicies, gateways, …"""
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


def crd_name(kind: str) -> str:
    """`<plural>.<group>`, e.g. `virtualservices.networking.istio.io`."""
    return f"{plural(kind)}.{api.KINDS[kind].GROUP}"


def structural(schema: Obj, defs: Obj | None = None, seen: tuple[str, ...] = ()) -> Obj:
    """One JSON Schema node (pydantic's output) as a structural OpenAPI v3 node."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:  # a recursive model: Kubernetes schemas cannot recurse
            return {"type": "object", **_FREE}
        return structural(defs[name], defs, (*seen, name))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _alternatives(schema[key], defs, seen)
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return structural(schema["allOf"][0], defs, seen)
    out: Obj = {key: schema[key] for key in _KEEP if key in schema}
    if out.get("format") not in _FORMATS:
        out.pop("format", None)
    if "const" in schema:
        out["enum"] = [schema["const"]]
    kind = schema.get("type")
    if kind is None:
        return {**_FREE} if "properties" not in schema else {"type": "object", **_object(schema, defs, seen)}
    out["type"] = kind
    if kind == "object":
        out.update(_object(schema, defs, seen))
    elif kind == "array":
        out["items"] = structural(schema.get("items", {}), defs, seen)
    return out


def _object(schema: Obj, defs: Obj, seen: tuple[str, ...]) -> Obj:
    if "properties" in schema:
        return {"properties": {name: structural(sub, defs, seen) for name, sub in schema["properties"].items()}}
    extra = schema.get("additionalProperties", True)
    if isinstance(extra, dict) and extra:  # a map: labels, headers, …
        return {"additionalProperties": structural(extra, defs, seen)}
    return {**_FREE}  # a free-form object (dict[str, Any])


def _alternatives(options: list[Obj], defs: Obj, seen: tuple[str, ...]) -> Obj:
    rest = [option for option in options if option != _NULL]
    nullable = {"nullable": True} if len(rest) < len(options) else {}
    if len(rest) == 1:
        return {**structural(rest[0], defs, seen), **nullable}
    types = {structural(option, defs, seen).get("type") for option in rest}
    if types == {"integer", "string"}:
        return {"x-kubernetes-int-or-string": True, **nullable}
    return {**_FREE, **nullable}  # a union Kubernetes cannot express: the model validates it at the edge


def openapi_schema(kind: str) -> Obj:
    """The CRD's `openAPIV3Schema` for one kind: the envelope plus the model's `spec`."""
    model = api.KINDS[kind].model_json_schema(by_alias=True)
    spec = structural(model["properties"]["spec"], model.get("$defs", {}))
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": {"type": "object", **_FREE},
        },
    }


def crd(kind: str) -> Obj:
    cls = api.KINDS[kind]
    schema = openapi_schema(kind)
    versions = [
        {"name": version, "served": True, "storage": version == STORAGE_VERSION,
         "schema": {"openAPIV3Schema": schema}, "subresources": {"status": {}}}
        for version in VERSIONS[cls.GROUP]
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name(kind), "labels": {"app.kubernetes.io/part-of": "weir"}},
        "spec": {
            "group": cls.GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural(kind),
                      "singular": kind.lower(), "shortNames": SHORT_NAMES.get(kind, []),
                      "categories": CATEGORIES[cls.GROUP]},
            "scope": "Namespaced",
            "versions": versions,
        },
    }


def all_crds() -> list[Obj]:
    """One CRD per kind of `mesh.api.KINDS`, in that order."""
    return [crd(kind) for kind in api.KINDS]
