"""JSON wire form of `mesh.view.model` and the content-hash version.

Encoding is `dataclasses.asdict`; decoding walks the dataclass type hints, so adding a field to the model
needs no change here. A payload that does not fit the model raises `ViewError` (the proxy NACKs it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from functools import cache
from typing import Any, TypeVar

from mesh.view import model

T = TypeVar("T")


def to_dict(view: model.ProxyView) -> dict[str, Any]:
    return dataclasses.asdict(view)


def to_json(view: model.ProxyView) -> bytes:
    return json.dumps(to_dict(view), separators=(",", ":"), sort_keys=True).encode()


def version_of(view: model.ProxyView) -> str:
    """Content hash: equal views have equal versions, on every control-plane replica."""
    return hashlib.sha256(to_json(view)).hexdigest()[:16]


def from_dict(data: Any) -> model.ProxyView:
    view = _decode(model.ProxyView, data, "view")
    model.check_references(view)
    return view


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(model))


def _decode(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise model.ViewError(f"{path}: expected an object")
        hints = _hints(tp)
        unknown = set(value) - set(hints)
        if unknown:
            raise model.ViewError(f"{path}: unknown field(s) {sorted(unknown)}")
        kwargs = {name: _decode(hints[name], item, f"{path}.{name}") for name, item in value.items()}
        try:
            return tp(**kwargs)
        except TypeError as exc:
            raise model.ViewError(f"{path}: {exc}") from None
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(inner, value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise model.ViewError(f"{path}: expected a list")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item, f"{path}[{i}]") for i, item in enumerate(value))
        if len(args) != len(value):
            raise model.ViewError(f"{path}: expected {len(args)} items")
        return tuple(_decode(a, item, f"{path}[{i}]") for i, (a, item) in enumerate(zip(args, value)))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise model.ViewError(f"{path}: expected {tp.__name__}, got {type(value).__name__}")
    return value
