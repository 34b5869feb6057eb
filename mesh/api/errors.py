"""The one error type of `mesh.api`: a refused resource, named by file, resource and field path.

Every check in the models raises pydantic errors; `from_validation_error` is the single place that turns
them into a `ConfigError` whose path uses Istio's camelCase field names and `[i]` list indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

# Our own checks use this pydantic error type; its ctx carries the message and an optional sub-path
# ("at") below the model that raised it, so cross-field errors still point at the offending field.
WEIR_ERROR = "weir"


class ConfigError(ValueError):
    """A resource (or a whole file) that Weir refuses.

    `file`, `resource` (`Kind/namespace/name`) and `path` (`spec.http[0].route`) may be empty when
    unknown (e.g. a YAML syntax error has no resource). `problems` holds every (path, message) found;
    `path`/`message` are the first of them.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str = "",
        resource: str = "",
        path: str = "",
        problems: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.file = file
        self.resource = resource
        self.path = path
        self.message = message
        self.problems: tuple[tuple[str, str], ...] = tuple(problems) or ((path, message),)
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.resource, self.path) if p]
        text = ": ".join([*parts, self.message])
        extra = len(self.problems) - 1
        return f"{text} (and {extra} more)" if extra > 0 else text

    def __reduce__(self):  # keep keyword-only attributes through pickling (multiprocessing, caches)
        return (_rebuild, (self.message, self.file, self.resource, self.path, self.problems))


def _rebuild(message: str, file: str, resource: str, path: str, problems) -> ConfigError:
    return ConfigError(message, file=file, resource=resource, path=path, problems=problems)


def invalid(message: str, at: str = "") -> PydanticCustomError:
    """An error to raise from a model validator; `at` is a path below the model (`route[1].weight`)."""
    return PydanticCustomError(WEIR_ERROR, "{msg}", {"msg": message, "at": at})


def join_path(loc: Sequence[Any]) -> str:
    """('spec', 'http', 0, 'route') -> 'spec.http[0].route'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


def _extend(path: str, at: str) -> str:
    if not at:
        return path
    if not path or at.startswith("["):
        return path + at
    return f"{path}.{at}"


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == WEIR_ERROR:
        return str(ctx.get("msg", err["msg"]))
    if kind == "missing":
        return "required value is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, key = bounds[kind]
        return f"invalid value {value!r}: must be {op} {ctx.get(key)}"
    if kind == "string_too_short":
        n = ctx.get("min_length")
        return "must not be empty" if n == 1 else f"must be at least {n} characters"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "literal_error":
        return f"invalid value {value!r}: expected {ctx.get('expected')}"
    if kind.endswith(("_type", "_parsing")) or kind in ("invalid_key", "model_attributes_type"):
        return f"invalid type {type(value).__name__}: {err['msg']}"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def problems_of(exc: ValidationError, prefix: Sequence[Any] = ()) -> list[tuple[str, str]]:
    """Every error of `exc` as (path, message), paths below `prefix`."""
    out = []
    for err in exc.errors(include_url=False):
        loc = [*prefix, *err["loc"]]
        # Tagged/union validators add their own loc entries (function names, class names): drop them.
        loc = [p for p in loc if isinstance(p, int) or not str(p).startswith(("function-", "is-instance["))]
        at = (err.get("ctx") or {}).get("at", "") if err["type"] == WEIR_ERROR else ""
        out.append((_extend(join_path(loc), at), _describe(err)))
    return out


def from_validation_error(
    exc: ValidationError, *, file: str = "", resource: str = "", prefix: Sequence[Any] = ()
) -> ConfigError:
    problems = problems_of(exc, prefix)
    path, message = problems[0]
    return ConfigError(message, file=file, resource=resource, path=path, problems=problems)
