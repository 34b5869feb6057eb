"""The value syntax of AuthorizationPolicy rules, as Istio's `pkg/config/security` checks it: `when`
attribute keys and their values, IP blocks, ports, service accounts and path templates.

Each `check_*` returns (sub-path, message) for the first problem, or None, so the models in
`authorizationpolicy.py` attach it to their own field path.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

Problem = tuple[str, str] | None

MAX_SERVICE_ACCOUNTS = 16
_MAX_SERVICE_ACCOUNT_LEN = 320
_DIGITS = re.compile(r"^[0-9]+$")
MAX_PORT = 65535

# `when` keys. Exact attributes whose values are free text; then prefixes of `name[key]` attributes.
FREE_TEXT_ATTRIBUTES = frozenset(
    {
        "source.namespace",
        "source.principal",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "connection.sni",
    }
)
IP_ATTRIBUTES = frozenset({"source.ip", "remote.ip", "destination.ip"})
PORT_ATTRIBUTE = "destination.port"
SERVICE_ACCOUNT_ATTRIBUTE = "source.serviceAccount"
MAP_ATTRIBUTE_PREFIXES = (
    "request.headers",
    "request.experimental.inline.headers",
    "request.auth.claims",
    "experimental.envoy.filters.",
)
# Attributes of Istio's v1alpha1 RBAC that v1beta1 refuses, with the reason it gives.
_RETIRED = {
    "destination.namespace": "attribute destination.namespace is replaced by the metadata.namespace",
    "destination.name": "deprecated attribute destination.name: only supported in v1alpha1",
    "destination.user": "deprecated attribute destination.user: only supported in v1alpha1",
}

MATCH_ONE_TEMPLATE = "{*}"
MATCH_ANY_TEMPLATE = "{**}"
# RFC 3986 pchar, the literal segments allowed next to a path template.
_PATH_LITERAL = re.compile(r"^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$")


EMPTY = "empty value not allowed"


def check_not_empty(values: Sequence[str]) -> Problem:
    for i, value in enumerate(values):
        if value == "":
            return f"[{i}]", EMPTY
    return None


def check_ip(value: str) -> str:
    """'' if `value` is an IP address or CIDR block (Go's netip rules), else the reason."""
    addr, slash, bits = value.partition("/")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return f"bad CIDR range ({value})" if slash else f"bad IP address ({value})"
    if slash and (not _DIGITS.match(bits) or int(bits) > ip.max_prefixlen):
        return f"bad CIDR range ({value}): bad bits after slash: {bits!r}"
    return ""


def check_ips(values: Sequence[str]) -> Problem:
    for i, value in enumerate(values):
        if problem := (check_ip(value) if value else EMPTY):
            return f"[{i}]", problem
    return None


def check_ports(values: Sequence[str]) -> Problem:
    # Istio parses with ParseUint and allows 0..65535 (0 never matches a real connection).
    for i, value in enumerate(values):
        if value == "":
            return f"[{i}]", EMPTY
        if not _DIGITS.match(value) or int(value) > MAX_PORT:
            return f"[{i}]", f"bad port ({value}): must be a number in 0-{MAX_PORT}"
    return None


def check_service_accounts(values: Sequence[str]) -> Problem:
    """`serviceAccount` or `namespace/serviceAccount`, no wildcards, at most 16 of them."""
    if len(values) > MAX_SERVICE_ACCOUNTS:
        return "", f"may not have more than {MAX_SERVICE_ACCOUNTS} values"
    expected = "expected format 'serviceAccount' or 'namespace/serviceAccount'"
    for i, value in enumerate(values):
        at = f"[{i}]"
        if value == "":
            return at, EMPTY
        if "*" in value:
            return at, f"wildcard not allowed in service account {value!r}"
        if value.count("/") > 1:
            return at, f"{expected}, found {value!r}"
        if len(value) > _MAX_SERVICE_ACCOUNT_LEN:
            return at, f"value cannot exceed {_MAX_SERVICE_ACCOUNT_LEN} characters"
        ns, slash, sa = value.partition("/")
        if slash and not ns:
            return at, f"{expected}, found empty namespace in {value!r}"
        if slash and not sa:
            return at, f"{expected}, found empty serviceAccount in {value!r}"
    return None


def check_paths(values: Sequence[str]) -> Problem:
    """Non-empty; Envoy's URI templates: `{*}` one segment, `{**}` the rest (the last operator)."""
    for i, value in enumerate(values):
        if value == "":
            return f"[{i}]", EMPTY
        has_template = MATCH_ONE_TEMPLATE in value or MATCH_ANY_TEMPLATE in value
        if has_template and not value.startswith("/"):
            return f"[{i}]", f"invalid or unsupported path {value!r}: a path template starts with '/'"
        seen_any = False
        for glob in value.strip("/").split("/"):
            if glob in (MATCH_ONE_TEMPLATE, MATCH_ANY_TEMPLATE):
                if seen_any:
                    return f"[{i}]", f"invalid or unsupported path {value!r}: {{**}} is not the last operator"
                seen_any = glob == MATCH_ANY_TEMPLATE
            elif "{" in glob or "}" in glob:
                return (
                    f"[{i}]",
                    f"invalid or unsupported path {value!r}: '{{' or '}}' outside a path template",
                )
            elif has_template and not _PATH_LITERAL.match(glob):
                return (
                    f"[{i}]",
                    f"invalid or unsupported path {value!r}: segment {glob!r} is not a valid literal",
                )
    return None


def _check_map_key(key: str) -> str:
    open_at = key.find("[")
    if key.endswith("]") and 0 < open_at < len(key) - 2:
        return ""
    return f"bad key ({key}): should have format a[b]"


def check_attribute(key: str, values: Sequence[str]) -> Problem:
    """Istio's ValidateAttribute: is `key` a supported `when` attribute, and are `values` its kind?

    The sub-path is "key" for a problem with the key, else `[i]` of the offending value."""
    if problem := check_not_empty(values):
        return problem
    if key.startswith(MAP_ATTRIBUTE_PREFIXES):
        return ("key", problem) if (problem := _check_map_key(key)) else None
    if key in IP_ATTRIBUTES:
        return check_ips(values)
    if key == PORT_ATTRIBUTE:
        return check_ports(values)
    if key == SERVICE_ACCOUNT_ATTRIBUTE:
        return check_service_accounts(values)
    if key in FREE_TEXT_ATTRIBUTES:
        return None
    if key in _RETIRED:
        return "key", _RETIRED[key]
    if key.startswith("destination.labels"):
        return "key", f"attribute {key} is replaced by the workload selector"
    return "key", f"unknown attribute: {key}"
