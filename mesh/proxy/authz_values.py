"""AuthorizationPolicy's values, as Envoy's RBAC matchers compare them (`mesh.proxy.authz` compiles each field of
a rule with one of these): strings (exact, "prefix*", "*suffix", "*"), paths (those, and Envoy URI templates
for `{*}` / `{**}`), hosts (case-insensitive, with or without a port), IP blocks and ports. Each is built once
per view and has one `match`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mesh.proxy.authz import Request


class Strings:
    """Istio string values: exact, "prefix*", "*suffix", or "*" (present and non-empty). A list attribute
    (claims, audiences) matches when any element does."""

    __slots__ = ("exact", "prefixes", "suffixes", "presence", "fold")

    def __init__(self, values: Iterable[str], fold: bool = False) -> None:
        self.fold = fold
        exact, prefixes, suffixes, self.presence = set(), [], [], False
        for value in values:
            value = value.lower() if fold else value
            if value == "*":
                self.presence = True
            elif value.startswith("*"):
                suffixes.append(value[1:])
            elif value.endswith("*"):
                prefixes.append(value[:-1])
            else:
                exact.add(value)
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self.suffixes = tuple(suffixes)

    def match(self, value) -> bool:
        if isinstance(value, str):
            if not value:
                return False
            if self.fold:
                value = value.lower()
            if self.presence or value in self.exact:
                return True
            return bool(self.prefixes and value.startswith(self.prefixes)
                        or self.suffixes and value.endswith(self.suffixes))
        if isinstance(value, list | tuple):
            return any(self.match(item) for item in value)
        return False  # absent, or a type Istio's string matchers do not compare (numbers, booleans, objects)


class Paths:
    """Operation paths: Istio's strings, and for a value with `{*}` or `{**}` an Envoy URI template, as
    Istio hands those to Envoy (`{*}` → `*`, `{**}` → `**`): `{*}` is one non-empty path segment, `{**}`
    the rest of the path, '/' included, possibly empty; literal segments as written; a trailing '/' must be
    there. Matched against the whole path without its query. So `/admin/{**}` matches `/admin/` and
    `/admin/a/b`, not `/admin`; `/books/{*}/reviews` matches `/books/1/reviews`, not `/books/1/2/reviews`."""

    __slots__ = ("strings", "templates")

    def __init__(self, values: Iterable[str]) -> None:
        values = tuple(values)
        self.strings = Strings(v for v in values if not _is_template(v))
        self.templates = tuple(uri_template(v) for v in values if _is_template(v))

    def match(self, value) -> bool:
        if self.strings.match(value):
            return True
        return isinstance(value, str) and any(template.fullmatch(value) for template in self.templates)


# Envoy's uri_template_internal: a path character (RFC 3986 pchar without '*' and '='), one segment, the rest.
_PCHAR = "a-zA-Z0-9\\-._~%!$&'()+,;:@"
_ONE_SEGMENT = f"[{_PCHAR}]+"
_ANY_SEGMENTS = f"[{_PCHAR}/]*"


def _is_template(value: str) -> bool:
    return "{*}" in value or "{**}" in value


def uri_template(value: str) -> re.Pattern:
    """The regex of one path template (validated by mesh.api: it starts with '/', `{**}` comes last)."""
    parts = []
    for segment in value[1:].split("/"):
        if segment == "{*}":
            parts.append(_ONE_SEGMENT)
        elif segment == "{**}":
            parts.append(_ANY_SEGMENTS)
        else:
            parts.append(re.escape(segment))
    return re.compile("/" + "/".join(parts))


class Hosts:
    """Operation hosts: case-insensitive; a value without a port compares with the host alone (the
    request's port ignored), a value with one ("example.com:8080", "example.com:*") with the Host header."""

    __slots__ = ("bare", "with_port")

    def __init__(self, values: Iterable[str]) -> None:
        values = tuple(values)
        self.bare = Strings((v for v in values if not _has_port(v)), fold=True)
        self.with_port = Strings((v for v in values if _has_port(v)), fold=True)

    def match(self, request: Request) -> bool:
        return self.bare.match(request.host) or self.with_port.match(request.authority)


def _has_port(host: str) -> bool:
    return ":" in host[host.rfind("]") + 1:]


class IpBlocks:
    """Addresses or CIDRs ("10.0.0.1", "10.0.0.0/16", "::1"); an address that does not parse never matches."""

    __slots__ = ("networks",)

    def __init__(self, values: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)

    def match(self, value) -> bool:
        if not value:
            return False
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class Ports:
    __slots__ = ("numbers",)

    def __init__(self, values: Iterable[str]) -> None:
        self.numbers = frozenset(int(v) for v in values)

    def match(self, value) -> bool:
        return value in self.numbers
