"""CORS on a route (Istio `corsPolicy`), as Envoy's CORS filter runs it in a sidecar or gateway.

The filter runs once the route is chosen and before anything else is decided for the request (Istio's
filter order: cors, fault, router; so a preflight takes no destination, endpoint or balancer turn), and only
for a request that sends a non-empty `Origin`. An origin is allowed when one of the policy's
matches accepts it, or accepts `*` (`exact: "*"` allows every origin). Then:

- A preflight (OPTIONS with `Access-Control-Request-Method`) is answered here, 200 with no body and never
  forwarded: `access-control-allow-origin` echoes the origin when allowed, and the policy's credentials,
  methods, headers and max-age follow. A preflight from an origin not allowed goes upstream untouched
  (unmatchedPreflights FORWARD, the default) or is answered without an allow-origin (IGNORE).
- Any other request from an allowed origin goes on; its answer (the upstream's, or a local reply such as a
  fault's abort, a 503 UH or UO, a 504) carries `access-control-allow-origin: <origin>`, plus
  allow-credentials and expose-headers when set. These replace the upstream's own lines of the same name,
  and the route's header operations for them (`mesh.proxy.routing.CompiledDestination.cors_response`).

A worked example, the policy of Istio's test data (allowOrigins exact `http://foo.example`, allowMethods
POST,GET,OPTIONS, allowHeaders content-type, exposeHeaders x-custom-header, maxAge 300s, credentials):

    OPTIONS /books  Origin: http://foo.example  Access-Control-Request-Method: POST
    → 200  access-control-allow-origin: http://foo.example   access-control-allow-credentials: true
           access-control-allow-methods: POST,GET,OPTIONS     access-control-allow-headers: content-type
           access-control-max-age: 300
    GET /books  Origin: http://foo.example   → the upstream's answer + allow-origin, allow-credentials and
                                               access-control-expose-headers: x-custom-header
    GET /books  Origin: http://evil.example  → the upstream's answer, as it came
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesh.proxy.matching import RequestHead, compile_string_match
from mesh.view import model

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange

ORIGIN = b"origin"
REQUEST_METHOD = b"access-control-request-method"
REQUEST_HEADERS = b"access-control-request-headers"
ALLOW_ORIGIN = b"access-control-allow-origin"
ALLOW_CREDENTIALS = b"access-control-allow-credentials"
EXPOSE_HEADERS = b"access-control-expose-headers"
CREDENTIALS_LINE = b"access-control-allow-credentials: true\r\n"
OTHER, ALLOWED, ANSWERED = range(3)  # what `check` did


class CompiledCors:
    """A route's policy with its origin matches compiled and its constant header lines encoded once."""

    __slots__ = ("origins", "any_origin", "methods", "headers", "preflight_tail", "response_tail", "overridden",
                 "forward_unmatched")

    def __init__(self, spec: model.Cors) -> None:
        self.origins = tuple(compile_string_match(m) for m in spec.origins)
        self.any_origin = any(match("*") for match in self.origins)  # Envoy: a matcher accepting "*" allows all
        self.methods = spec.allow_methods
        self.headers = spec.allow_headers
        credentials = CREDENTIALS_LINE if spec.credentials else b""
        # Preflight lines after allow-origin, but methods and headers (a `*` echoes the request's).
        self.preflight_tail = credentials + (
            b"access-control-max-age: %b\r\n" % spec.max_age.encode("latin-1") if spec.max_age else b"")
        expose = spec.expose_headers.encode("latin-1")
        self.response_tail = credentials + (EXPOSE_HEADERS + b": " + expose + b"\r\n" if expose else b"")
        names = {ALLOW_ORIGIN}
        if credentials:
            names.add(ALLOW_CREDENTIALS)
        if expose:
            names.add(EXPOSE_HEADERS)
        self.overridden = frozenset(names)  # what an answer to an allowed origin gets from here only
        self.forward_unmatched = spec.forward_unmatched

    def allows(self, origin: str) -> bool:
        return self.any_origin or any(match(origin) for match in self.origins)

    def preflight_lines(self, origin: str, allowed: bool, head: RequestHead) -> bytes:
        lines = [_allow_origin(origin)] if allowed else []
        lines.append(self.preflight_tail)
        for name, value, echoed in ((b"access-control-allow-methods", self.methods, REQUEST_METHOD),
                                    (b"access-control-allow-headers", self.headers, REQUEST_HEADERS)):
            if value:
                text = (head.header(echoed) or "") if value == "*" else value
                lines.append(name + b": " + text.encode("latin-1") + b"\r\n")
        return b"".join(lines)


def _allow_origin(origin: str) -> bytes:
    return ALLOW_ORIGIN + b": " + origin.encode("latin-1") + b"\r\n"


def check(exchange: Exchange, cors: CompiledCors) -> int:
    """Run the filter on a request whose route has a policy, before the upstream is picked: ANSWERED (a
    preflight, replied to), ALLOWED (its answers, upstream's or local, will carry the CORS headers; the
    caller takes the destination's `cors_response` plan) or OTHER (nothing to do)."""
    head = exchange.head
    origin = head.header(ORIGIN)
    if not origin:
        return OTHER
    allowed = cors.allows(origin)
    if exchange.method == "OPTIONS" and head.header(REQUEST_METHOD):
        if allowed or not cors.forward_unmatched:
            exchange.reply(200, b"", extra_headers=cors.preflight_lines(origin, allowed, head), content_type=b"")
            return ANSWERED
        return OTHER
    if not allowed:
        return OTHER
    exchange.extra_response_headers += _allow_origin(origin) + cors.response_tail
    return ALLOWED
