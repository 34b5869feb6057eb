"""The HTTP routing part of the per-proxy view: one Istio http rule (`Route`) and what it is made of (match
blocks, weighted destinations, header operations, redirect, direct response, rewrite, fault, retries,
mirrors, CORS), compiled by `mesh.control.routes`. Re-exported by `mesh.view.model`, the view's one namespace.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StringMatch:
    kind: str  # "exact" | "prefix" | "regex"
    value: str
    ignore_case: bool = False


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """A header or query parameter condition; `match=None` means "present"."""

    name: str  # headers: lower-case
    match: StringMatch | None = None
    invert: bool = False  # from withoutHeaders: the condition must NOT hold


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """One Istio match block: every set condition must hold (AND)."""

    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: tuple[KeyMatch, ...] = ()
    query_params: tuple[KeyMatch, ...] = ()
    port: int | None = None


@dataclass(frozen=True, slots=True)
class HeaderOps:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


NO_HEADER_OPS = HeaderOps()


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    cluster: str
    weight: int = 1
    request_headers: HeaderOps = NO_HEADER_OPS
    response_headers: HeaderOps = NO_HEADER_OPS


# Redirect.derive_port (Istio's derivePort): no explicit port in the Location, or the request's port.
FROM_PROTOCOL_DEFAULT = "FROM_PROTOCOL_DEFAULT"
FROM_REQUEST_PORT = "FROM_REQUEST_PORT"


@dataclass(frozen=True, slots=True)
class Redirect:
    """A VirtualService `redirect`. `uri` replaces the path (the request's query is kept unless `uri` has
    its own, as Envoy does); `port` or `derive_port` ("" or one of the two above) decide the port."""

    uri: str | None = None
    authority: str | None = None
    port: int | None = None
    scheme: str | None = None
    status: int = 301
    derive_port: str = ""


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: str = ""


@dataclass(frozen=True, slots=True)
class Rewrite:
    uri: str | None = None
    authority: str | None = None
    uri_regex: tuple[str, str] | None = None  # (pattern, substitution)


@dataclass(frozen=True, slots=True)
class Fault:
    """Istio HTTPFaultInjection, applied by the calling proxy before the request leaves it.
    Percentages are 0-100; a delay or abort with no percentage is never injected."""

    delay_s: float | None = None
    delay_percent: float = 0.0
    abort_status: int | None = None
    abort_percent: float = 0.0


# Istio's retry policy when a route sets none: 2 retries on connection failures and 503.
DEFAULT_RETRY_ON = ("connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Envoy retry policy: `attempts` retries after the first try (0 disables), each bounded by
    `per_try_timeout_s`, all bounded by the route timeout; jittered backoff between tries. A retry goes
    to another endpoint when there is one (`avoid_previous_host`, Envoy's previous_hosts predicate)."""

    attempts: int = 2
    per_try_timeout_s: float | None = None
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    retriable_status: tuple[int, ...] = (503,)
    backoff_base_s: float = 0.025
    backoff_max_s: float = 0.25
    avoid_previous_host: bool = True


DEFAULT_RETRIES = RetryPolicy()


@dataclass(frozen=True, slots=True)
class Mirror:
    """Istio mirror/mirrors: a fire-and-forget copy of each request (`percent` of them, 0-100) to
    `cluster`, with "-shadow" appended to the Host; its answer is discarded."""

    cluster: str
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Cors:
    """Istio corsPolicy as Envoy's CORS filter takes it: origins as matches (`*` allows any), the other
    values joined with "," as they are sent, `max_age` in whole seconds ("" when unset); `credentials` None
    when unset (no header). `forward_unmatched`: a preflight from an origin not allowed goes upstream
    (Istio's default, unmatchedPreflights FORWARD) instead of being answered here without an allow-origin
    (IGNORE; the other preflight headers are sent as configured, as Envoy does)."""

    origins: tuple[StringMatch, ...] = ()
    allow_methods: str = ""
    allow_headers: str = ""
    expose_headers: str = ""
    max_age: str = ""
    credentials: bool | None = None
    forward_unmatched: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    """One Istio http rule. Empty `matches` matches everything; blocks are ORed."""

    name: str
    matches: tuple[RouteMatch, ...] = ()
    clusters: tuple[WeightedCluster, ...] = ()
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    rewrite: Rewrite | None = None
    request_headers: HeaderOps = NO_HEADER_OPS
    response_headers: HeaderOps = NO_HEADER_OPS
    timeout_s: float | None = None  # off by default, as in Istio
    retries: RetryPolicy = DEFAULT_RETRIES
    fault: Fault | None = None
    mirrors: tuple[Mirror, ...] = ()
    cors: Cors | None = None
