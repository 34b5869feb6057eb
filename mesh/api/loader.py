"""The edge: Istio YAML text or files in, validated immutable resources out (or one ConfigError);
and `dump`, the way back to an Istio-shaped dict."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import ValidationError

from mesh.api.authorizationpolicy import AuthorizationPolicy
from mesh.api.destinationrule import DestinationRule
from mesh.api.errors import ConfigError, from_validation_error
from mesh.api.gateway import Gateway
from mesh.api.peerauthentication import PeerAuthentication
from mesh.api.requestauthentication import RequestAuthentication
from mesh.api.resource import DEFAULT_NAMESPACE, Resource
from mesh.api.serviceentry import ServiceEntry
from mesh.api.virtualservice import VirtualService

KINDS: dict[str, type[Resource]] = {
    cls.KIND: cls
    for cls in (
        VirtualService,
        DestinationRule,
        Gateway,
        ServiceEntry,
        PeerAuthentication,
        AuthorizationPolicy,
        RequestAuthentication,
    )
}


# Nesting depth of a YAML document: Istio resources nest about a dozen levels; deeper input would only make
# the (recursive) composer and validators slow, then fail with RecursionError.
MAX_YAML_DEPTH = 64
# Nodes of one document once aliases are expanded: bounds the "billion laughs" (a few lines of anchors and
# aliases that expand to 10^9 nodes for the validators to walk). Generous: a large AuthorizationPolicy has a
# few thousand.
MAX_YAML_NODES = 200_000


class _GuardedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested deeper than MAX_YAML_DEPTH, expanding to more than
    MAX_YAML_NODES nodes, or holding a recursive alias (a structure that contains itself)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) → nodes it expands to; aliases share their anchor's node

    def compose_document(self) -> yaml.Node:
        self._sizes = {}
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        mark = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            anchored = self.anchors.get(event.anchor)
            if anchored is not None and id(anchored) not in self._sizes:  # its anchor is still being composed
                raise yaml.composer.ComposerError(None, None, "recursive alias: a node that contains itself", mark)
            return super().compose_node(parent, index)  # the anchor's node, already counted
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        sizes = self._sizes
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = ()
        size = 1
        for child in children:
            size += sizes[id(child)]
        if size > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"aliases expand to more than {MAX_YAML_NODES} nodes", mark)
        sizes[id(node)] = size
        return node


def _key(doc: dict[str, Any], namespace: str) -> str:
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    kind = doc.get("kind")
    return f"{kind if isinstance(kind, str) else '?'}/{namespace}/{name if isinstance(name, str) else '?'}"


def _namespace_of(doc: dict[str, Any], default: str) -> str:
    meta = doc.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, dict) else None
    return ns if isinstance(ns, str) and ns else default


def load_document(doc: Any, filename: str = "<stdin>", default_namespace: str | None = None) -> Resource:
    """Validate one already-parsed document (a dict from YAML or JSON)."""
    if not isinstance(doc, dict):
        raise ConfigError(
            f"expected a mapping (a Kubernetes object), got {type(doc).__name__}", file=filename
        )
    namespace = _namespace_of(doc, default_namespace or DEFAULT_NAMESPACE)
    key = _key(doc, namespace)
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if kind is None:
        raise ConfigError("required value is missing", file=filename, resource=key, path="kind")
    if api_version is None:
        raise ConfigError("required value is missing", file=filename, resource=key, path="apiVersion")
    if not isinstance(kind, str):
        raise ConfigError(
            f"invalid type {type(kind).__name__}: kind must be a string",
            file=filename,
            resource=key,
            path="kind",
        )
    cls = KINDS.get(kind)
    if cls is None:
        supported = ", ".join(KINDS)
        raise ConfigError(
            f"unknown kind {kind!r}: expected one of {supported}", file=filename, resource=key, path="kind"
        )
    if not isinstance(api_version, str) or not api_version.startswith(f"{cls.GROUP}/"):
        raise ConfigError(
            f"unknown apiVersion {api_version!r} for kind {kind}: expected {cls.GROUP}/<version>",
            file=filename,
            resource=key,
            path="apiVersion",
        )
    if isinstance(doc.get("metadata"), dict):
        doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    try:
        return cls.model_validate(doc)
    except ValidationError as exc:
        raise from_validation_error(exc, file=filename, resource=key) from None
    except RecursionError:  # YAML anchors can build self-referencing structures
        raise ConfigError("document is nested too deeply", file=filename, resource=key) from None


def _yaml_error(exc: yaml.YAMLError, filename: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigError(f"invalid YAML: {where}{problem}", file=filename)


def load_text(text: str, filename: str = "<stdin>", default_namespace: str | None = None) -> list[Resource]:
    """Parse multi-document YAML; empty and null documents are skipped."""
    try:
        docs = list(yaml.load_all(text, Loader=_GuardedLoader))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, filename) from None
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        # PyYAML's resolvers raise plain Python errors on some malformed scalars (e.g. bad timestamps).
        raise ConfigError(f"invalid YAML: {exc}", file=filename) from None
    return [load_document(doc, filename, default_namespace) for doc in docs if doc is not None]


def load_files(
    paths: Iterable[str | os.PathLike[str]], default_namespace: str | None = None
) -> list[Resource]:
    """Load every file in order; a directory loads its *.yaml/*.yml files, sorted."""
    out: list[Resource] = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith((".yaml", ".yml")))
            out.extend(load_files([os.path.join(path, n) for n in names], default_namespace))
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read file: {exc}", file=path) from None
        out.extend(load_text(text, path, default_namespace))
    return out


def dump(resource: Resource) -> dict[str, Any]:
    """The resource as Istio YAML would write it: camelCase keys, unset fields left out."""
    return resource.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
