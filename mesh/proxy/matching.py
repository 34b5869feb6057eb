"""Compiled request matchers: Istio match blocks turned into predicates, built once per view.

`compile_route_match` returns a predicate over a `RequestHead`; `mesh.proxy.routing` ORs the blocks of a
rule and takes the first rule that matches. Regexes are compiled here, once, never per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from mesh.view import model

if TYPE_CHECKING:
    import re2

Predicate = Callable[["RequestHead"], bool]


class RequestHead:
    """What routing sees of a request. Header names are lower-case bytes, as received after lowering."""

    __slots__ = ("method", "path", "host", "port", "scheme", "headers", "source_ip", "_query")

    def __init__(
        self,
        method: str,
        path: str,
        host: str,
        port: int,
        headers: list[tuple[bytes, bytes]],
        scheme: str = "http",
        source_ip: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.host = host
        self.port = port
        self.headers = headers
        self.scheme = scheme
        self.source_ip = source_ip
        self._query: dict[str, str] | None = None

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    @property
    def uri_path(self) -> str:
        return self.path.partition("?")[0]  # one call; `find` would parse its arguments as a tuple

    def query(self) -> dict[str, str]:
        """Query parameters; a repeated one keeps its first value, as Envoy's matchers and hash policy do."""
        if self._query is None:
            query: dict[str, str] = {}
            cut = self.path.find("?")
            if cut >= 0:
                for name, value in parse_qsl(self.path[cut + 1 :], keep_blank_values=True):
                    query.setdefault(name, value)
            self._query = query
        return self._query


class RegexError(ValueError):
    """A regex RE2 cannot compile (its message)."""


def compile_regex(pattern: str, ignore_case: bool = False) -> re2._Regexp:
    r"""A route's, header's or origin's regex, compiled with RE2 as Envoy runs Istio's: linear in the text's
    length whatever the pattern (Python's backtracking `re` took 25 s for `([a-z0-9]+-?)+/details` on a
    30-byte path); `\d`, `\w` and `\s` are ASCII, `$` is the end of the text. Raises `RegexError`. RE2 is
    imported on the first regex: a proxy whose views have none does not carry it (2.4 MiB)."""
    import re2

    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.log_errors = False  # a pattern RE2 refuses is a ViewError (NACK), not a line on stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise RegexError(f"{pattern!r}: {reason}") from None


def compile_string_match(match: model.StringMatch) -> Callable[[str], bool]:
    value = match.value
    if match.kind == "regex":
        pattern = compile_regex(value, match.ignore_case)
        return lambda text: pattern.fullmatch(text) is not None
    if match.ignore_case:
        value = value.lower()
        if match.kind == "exact":
            return lambda text: text.lower() == value
        return lambda text: text.lower().startswith(value)
    if match.kind == "exact":
        return lambda text: text == value
    return lambda text: text.startswith(value)


def _header_predicate(condition: model.KeyMatch) -> Predicate:
    name = condition.name.lower().encode("latin-1")
    test = compile_string_match(condition.match) if condition.match else None
    invert = condition.invert

    def check(request: RequestHead) -> bool:
        value = request.header(name)
        ok = value is not None and (test is None or test(value))
        return ok != invert

    return check


def _query_predicate(condition: model.KeyMatch) -> Predicate:
    name = condition.name
    test = compile_string_match(condition.match) if condition.match else None

    def check(request: RequestHead) -> bool:
        value = request.query().get(name)
        ok = value is not None and (test is None or test(value))
        return ok != condition.invert

    return check


def compile_route_match(match: model.RouteMatch) -> Predicate:
    """AND of every condition that is set in one Istio match block."""
    checks: list[Predicate] = []
    if match.uri is not None:
        test_uri = compile_string_match(match.uri)
        checks.append(lambda request: test_uri(request.uri_path))
    if match.method is not None:
        test_method = compile_string_match(match.method)
        checks.append(lambda request: test_method(request.method))
    if match.scheme is not None:
        test_scheme = compile_string_match(match.scheme)
        checks.append(lambda request: test_scheme(request.scheme))
    if match.authority is not None:
        test_authority = compile_string_match(match.authority)
        checks.append(lambda request: test_authority(request.host))
    if match.port is not None:
        port = match.port
        checks.append(lambda request: request.port == port)
    checks.extend(_header_predicate(h) for h in match.headers)
    checks.extend(_query_predicate(q) for q in match.query_params)
    if not checks:
        return lambda request: True
    if len(checks) == 1:
        return checks[0]
    return lambda request: all(check(request) for check in checks)


def matched_prefix(match: model.RouteMatch | None, request: RequestHead) -> str:
    """The part of the path a `rewrite.uri` replaces (Envoy's prefix_rewrite semantics)."""
    if match is None or match.uri is None:
        return "/"
    if match.uri.kind == "prefix":
        return request.uri_path[: len(match.uri.value)]
    return request.uri_path
