"""A VirtualService HTTP rule's `corsPolicy`, validated as Istio validates it (`validateCORSPolicy`).

Istio refuses an allowed origin whose match is empty, a regex RE2 would not compile (both `StringMatch`'s),
a method outside the nine of net/http (`*` included), an empty header name, and a `maxAge` finer than
whole seconds (Envoy's `max_age` is a count of seconds). `allowHeaders` and `exposeHeaders` entries are
joined into one header value as they are (`["content-type, x-a"]` is accepted, as Istio does); Weir also
refuses an entry a header value cannot carry (CR, LF, NUL, beyond Latin-1), which Istio lets through to
Envoy. `allowOrigin` is the deprecated list of exact origins, still read when `allowOrigins` is absent.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from mesh.api.errors import invalid
from mesh.api.types import HEADER_VALUE, Duration, Model, PositiveDuration, RequiredStringMatch

# Go's net/http method names: Istio's `supportedMethods`.
SUPPORTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"})


class CorsPolicy(Model):
    allow_origin: list[str] | None = None  # deprecated by allowOrigins
    allow_origins: list[RequiredStringMatch] | None = None
    allow_methods: list[str] | None = None
    allow_headers: list[str] | None = None
    expose_headers: list[str] | None = None
    max_age: PositiveDuration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, origins: list | None) -> list | None:
        for i, match in enumerate(origins or []):
            if "" in (match.exact, match.prefix, match.regex):
                raise invalid("'' is not a valid match for a CORS allowed origin", at=f"[{i}]")
        return origins

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, methods: list[str] | None) -> list[str] | None:
        for i, method in enumerate(methods or []):
            if method not in SUPPORTED_METHODS:
                raise invalid(f"{method!r} is not a supported HTTP method", at=f"[{i}]")
        return methods

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _header_names(cls, names: list[str] | None) -> list[str] | None:
        for i, name in enumerate(names or []):
            if not name:
                raise invalid("header name cannot be empty", at=f"[{i}]")
            if not HEADER_VALUE.match(name):
                raise invalid(f"invalid header name {name!r}: control or non-Latin-1 characters", at=f"[{i}]")
        return names

    @field_validator("max_age")
    @classmethod
    def _whole_seconds(cls, max_age: Duration | None) -> Duration | None:
        if max_age is not None and abs(max_age.seconds - round(max_age.seconds)) > 1e-9:
            raise invalid(f"maxAge {max_age} is accurate only to seconds precision")
        return max_age
