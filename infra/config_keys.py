"""Typed reads of single stack config keys: each checks one value and names its key when it is wrong.

A `Reader` maps a full key (`weir:clusterName`) to its parsed value, or `MISSING`; `get` applies a default
or fails, and `string`, `integer`, `boolean`, `choice`, `cidr` and `fields` check the value's type and range.
Every failure is a `SettingsError` naming the key, nested ones with their path (`weir:nodePool.minNodes`,
`weir:authorizedNetworks[0].cidr`), and what was expected, so `pulumi up` fails before anything is created.
Next: `infra.settings` reads every key of a stack with these into its frozen `StackSettings`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

MISSING = object()

Reader = Callable[[str], Any]  # full key ("weir:clusterName") -> parsed value, or MISSING


class SettingsError(ValueError):
    """A stack config key is missing or invalid; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"stack config {key}: {problem}")
        self.key = key


def get(read: Reader, key: str, default: Any = MISSING) -> Any:
    value = read(key)
    if value is MISSING or value is None:
        if default is MISSING:
            raise SettingsError(key, "missing (set it in stacks/Pulumi.<stack>.yaml or `pulumi config set`)")
        return default
    return value


def string(value: Any, key: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise SettingsError(key, f"expected a non-empty string, got {value!r}")
    if pattern and not pattern.match(value):
        raise SettingsError(key, f"{value!r} does not match {pattern.pattern}")
    return value


def integer(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(key, f"expected an integer in [{low}, {high}], got {value!r}")
    return value


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(key, f"expected true or false, got {value!r}")
    return value


def choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SettingsError(key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def cidr(value: Any, key: str, max_prefix: int = 32) -> str:
    try:
        net = ipaddress.IPv4Network(string(value, key))
    except ValueError as exc:
        raise SettingsError(key, f"not an IPv4 CIDR: {exc}") from None
    if net.prefixlen > max_prefix:
        raise SettingsError(key, f"{value} is smaller than /{max_prefix}")
    return str(net)


def fields(value: Any, key: str, names: tuple[str, ...]) -> Mapping[str, Any]:
    """An object whose fields are all among `names` (a typo is an error, not a silent default)."""
    if not isinstance(value, Mapping):
        raise SettingsError(key, f"expected an object with {', '.join(names)}, got {value!r}")
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise SettingsError(f"{key}.{unknown[0]}", f"unknown field (known: {', '.join(names)})")
    return value
