"""Value types shared by every Istio kind: the frozen base model, Duration, Percent, StringMatch,
port numbers and label maps.
"""

from __future__ import annotations

import re
import re._constants as _sre_constants
import re._parser as _sre_parser
import warnings
from dataclasses import dataclass
from typing import Annotated, Any

import re2
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import core_schema

from mesh.api.errors import invalid
from mesh.api.hosts import check_export_to


class Model(BaseModel):
    """Base of every Istio message: immutable, unknown fields refused, camelCase in YAML."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        hide_input_in_errors=True,
    )


# Go's time.ParseDuration grammar, which Istio accepts for protobuf Durations ("1h30m", "1.5s", "300ms").
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Duration:
    """A protobuf Duration as written in YAML: `seconds` for arithmetic, `text` to write it back."""

    seconds: float
    text: str

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse Go duration syntax; raises ValueError on malformed or negative input."""
        body = text.strip()
        if body.startswith("-") and body[1:].strip() not in ("0", ""):
            raise ValueError(f"invalid duration {text!r}: must not be negative")
        body = body.lstrip("+-")
        if body == "0":
            return cls(0.0, text)
        pos, total = 0, 0.0
        while pos < len(body):
            m = _DURATION_PART.match(body, pos)
            if m is None:
                raise ValueError(f"invalid duration {text!r}: expected e.g. 1.5s, 300ms, 1m, 2h")
            total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if pos == 0:
            raise ValueError(f"invalid duration {text!r}: expected e.g. 1.5s, 300ms, 1m, 2h")
        return cls(total, text)

    def __str__(self) -> str:
        return self.text

    @classmethod
    def _validate(cls, value: Any) -> Duration:
        if isinstance(value, Duration):
            return value
        if not isinstance(value, str):
            raise invalid(f"invalid duration {value!r}: expected a string like 1.5s, 300ms, 1m or 2h")
        try:
            return cls.parse(value)
        except ValueError as exc:
            raise invalid(str(exc)) from None

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda d: d.text),
        )


def _at_least_1ms(d: Duration) -> Duration:
    # Istio's ValidateDuration: timeouts, intervals and delays shorter than 1ms are refused.
    if d.seconds < 1e-3:
        raise invalid(f"invalid duration {d.text!r}: must be at least 1ms")
    return d


PositiveDuration = Annotated[Duration, AfterValidator(_at_least_1ms)]


def parse_duration(text: str) -> float:
    """Seconds of a duration string in Go/Istio syntax ("24h", "1h30m", "1.5s", "300ms").

    The one decision of what a duration string is, for the model and for every flag and stack key that takes
    one (`weir:security.workloadCertTtl`, `--workload-cert-ttl`, `meshctl chaos --delay`). Raises ValueError
    on a non-string, malformed or negative value; a caller wanting a positive one checks `> 0` itself.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected a string like 1.5s, 300ms, 1m or 2h")
    return Duration.parse(text).seconds


class Percent(Model):
    """Istio's `Percent` message: `{value: 12.5}` in [0, 100]."""

    value: float = Field(default=0.0, ge=0.0, le=100.0)


def _scalar_to_str(value: Any) -> Any:
    # YAML turns `version: 1` or `test: true` into int/bool; Kubernetes users mean the text.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


ScalarStr = Annotated[str, BeforeValidator(_scalar_to_str)]
StrMap = dict[str, ScalarStr]

PortNumber = Annotated[int, Field(ge=1, le=65535)]


def _check_export_to(values: list[str]) -> list[str]:
    for i, value in enumerate(values):
        if problem := check_export_to(value):
            raise invalid(problem, at=f"[{i}]")
    return values


# `exportTo` of VirtualService, DestinationRule and ServiceEntry: ".", "*", "~" or namespace names.
ExportTo = Annotated[list[str], AfterValidator(_check_export_to)]

# An HTTP header field name (an RFC 9110 token), or an HTTP/2 pseudo-header.
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$|^:[a-z]+$")
# A header field value HTTP/1.1 can carry (RFC 9110 5.5): no CR, LF or NUL, nothing beyond Latin-1.
HEADER_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")


# Kubernetes label syntax: optional DNS-subdomain prefix, then a name of at most 63 characters.
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if "*" in key or "*" in value:
            raise invalid("wildcard is not supported in selector", at=key)
        prefix, _, name = key.rpartition("/")
        if (
            not name
            or len(name) > 63
            or not _LABEL_NAME.match(name)
            or (prefix and not _LABEL_PREFIX.match(prefix))
        ):
            raise invalid(f"invalid label key {key!r}", at=key)
        if len(value) > 63 or not _LABEL_NAME.match(value):
            raise invalid(f"invalid label value {value!r}", at=key)
    return labels


Labels = Annotated[dict[str, ScalarStr], AfterValidator(_check_labels)]


# What Python's `re` accepts and RE2 (Istio's and Envoy's regex engine) refuses: its parse tree's opcodes.
_NOT_RE2 = {
    _sre_constants.ASSERT: "lookahead/lookbehind", _sre_constants.ASSERT_NOT: "lookahead/lookbehind",
    _sre_constants.GROUPREF: "a backreference", _sre_constants.GROUPREF_EXISTS: "a conditional group",
    _sre_constants.ATOMIC_GROUP: "an atomic group", _sre_constants.POSSESSIVE_REPEAT: "a possessive quantifier",
}
_NOT_RE2_FLAGS = re.VERBOSE | re.ASCII | re.LOCALE  # RE2 knows the inline flags i, m, s and U only
_RE2_MAX_REPEAT = 1000
_RE2_QUIET = re2.Options()
_RE2_QUIET.log_errors = False
_REPEATS = (_sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT)


def compile_re2(pattern: str, at: str = "") -> re2._Regexp:
    """A regex Istio would accept, compiled by RE2, the engine Envoy runs Istio's regexes in (and the proxy
    here, `mesh.proxy.matching.compile_regex`): so RE2-only syntax (`\\pL`, `\\z`, `(?U)`) is valid, except
    `\\C`, which Istio's validation (Go's regexp) refuses. When RE2 refuses a pattern that Python's `re` reads,
    `re`'s parse tree names what RE2 lacks (lookaround, backreferences, conditionals, atomic groups, possessive
    quantifiers, `\\Z`, repeats over 1000, the flags x/a/L), clearer than RE2's own message (`re`'s own
    parser: the stdlib has no public one). Raises the pydantic error `invalid` naming what is wrong."""
    if _has_any_byte_escape(pattern):
        raise invalid(f"invalid regex {pattern!r}: \\C (any byte) is refused by Istio, whose RE2 syntax is Go's",
                      at=at)
    try:
        return re2.compile(pattern, _RE2_QUIET)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
    found = _not_re2(pattern)
    if found:
        raise invalid(f"invalid regex {pattern!r}: {found} is not RE2 syntax (Istio's regex engine)", at=at)
    raise invalid(f"invalid regex {pattern!r}: {reason} (RE2, Istio's regex engine)", at=at)


def _has_any_byte_escape(pattern: str) -> bool:
    """`\\C`, which C++ RE2 takes (one byte, even inside a UTF-8 character) and Go's regexp does not."""
    at = pattern.find("\\")
    while at >= 0:
        if pattern.startswith("C", at + 1):
            return True
        at = pattern.find("\\", at + 2)
    return False


def _not_re2(pattern: str) -> str | None:
    """What Python's `re` reads in `pattern` that RE2 lacks, if `re` reads it at all."""
    with warnings.catch_warnings():  # "possible nested set": `[[:alpha:]]` is a POSIX class to RE2
        warnings.simplefilter("ignore", FutureWarning)
        try:
            tree = _sre_parser.parse(pattern)
        except (re.error, OverflowError, RecursionError):
            return None
    return "the inline flag x, a or L" if tree.state.flags & _NOT_RE2_FLAGS else _first_not_re2(tree)


def _first_not_re2(tree) -> str | None:
    for op, arg in tree:
        if op in _NOT_RE2:
            return _NOT_RE2[op]
        if op is _sre_constants.AT and arg is _sre_constants.AT_END_STRING:
            return "\\Z (RE2 writes \\z)"
        if op in _REPEATS and _RE2_MAX_REPEAT < max(arg[0], 0 if arg[1] is _sre_constants.MAXREPEAT else arg[1]):
            return f"a repeat count over {_RE2_MAX_REPEAT}"
        if op is _sre_constants.SUBPATTERN and arg[1] & _NOT_RE2_FLAGS:
            return "the inline flag x, a or L"
        for child in arg if isinstance(arg, tuple | list) else ():
            if isinstance(child, _sre_parser.SubPattern):
                found = _first_not_re2(child)
            elif isinstance(child, list):  # BRANCH: (None, [alternatives])
                found = next((f for f in map(_first_not_re2, child) if f), None)
            else:
                continue
            if found:
                return found
    return None


class StringMatch(Model):
    """Exactly one of exact, prefix or regex (RE2 syntax, checked by `compile_re2`).

    An empty StringMatch is only meaningful as a header/query presence check; fields that need a value
    use `RequiredStringMatch`.
    """

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StringMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) > 1:
            raise invalid(f"only one of exact, prefix or regex may be set, got {', '.join(given)}")
        if self.regex is not None:
            compile_re2(self.regex, at="regex")
        return self

    @property
    def is_empty(self) -> bool:
        return self.exact is None and self.prefix is None and self.regex is None


def _non_empty_match(m: StringMatch) -> StringMatch:
    if m.is_empty:
        raise invalid("one of exact, prefix or regex is required")
    return m


RequiredStringMatch = Annotated[StringMatch, AfterValidator(_non_empty_match)]


class PortSelector(Model):
    number: PortNumber | None = None


class WorkloadSelector(Model):
    """`istio.type.v1beta1.WorkloadSelector` (DestinationRule and the security kinds): `matchLabels`.

    `selector: {}` is accepted, as Istio does ("Weird but valid"): it selects like no selector."""

    match_labels: Labels | None = None


def no_duplicates(values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise invalid(f"duplicate value: {what} {value!r} appears more than once", at=f"[{i}]")
        seen.add(value)
