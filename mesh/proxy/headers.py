"""HTTP/1.1 request heads as the proxy rewrites them, and what they share with response heads
(`mesh.proxy.response_head`).

Hop-by-hop headers never cross the proxy; framing is re-decided per side (content-length passed through,
chunked re-encoded). Istio header operations (`headers.request|response.set|add|remove`) and rewrites are
applied here. Everything returns bytes ready for one `transport.write`.
"""

from __future__ import annotations

import itertools
import os
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING

from mesh.proxy import matching, tracing
from mesh.view import model

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange
    from mesh.proxy.forwarding import Forwarding
    from mesh.proxy.routing import CompiledRoute, Target

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer", b"upgrade",
    b"proxy-authorization", b"proxy-authenticate", b"expect",
})
# Metadata exchange between sidecars (Istio's x-envoy-peer-metadata): "ns;workload;app;version;service".
PEER_HEADER = b"x-weir-peer"
REQUEST_ID = b"x-request-id"
USER_AGENT = b"user-agent"
FORWARDED_FOR = b"x-forwarded-for"
_FORWARDED_FOR = frozenset({FORWARDED_FOR})
_TRACE_AND_FORWARDED_FOR = tracing.TRACE_HEADERS | _FORWARDED_FOR  # a gateway's usual set: no union per request
# Headers never copied to the upstream request (we write host ourselves) or back to the client.
SKIP_UPSTREAM = HOP_BY_HOP | {b"host", PEER_HEADER}
SKIP_DOWNSTREAM = HOP_BY_HOP | {PEER_HEADER}
CRLF = b"\r\n"
CHUNKED = b"transfer-encoding: chunked\r\n"


class HeaderPlan:
    """Istio header operations of one route + destination, merged and encoded once per view."""

    __slots__ = ("lines", "dropped")

    def __init__(self, dropped: frozenset[bytes], lines: bytes) -> None:
        self.dropped = dropped  # names removed from the message (`remove`, and `set` replaces)
        self.lines = lines  # header lines added, encoded

    @classmethod
    def of(cls, ops: tuple[model.HeaderOps, ...]) -> HeaderPlan:
        dropped, lines = set(), []
        for op in ops:
            dropped.update(name.lower().encode("latin-1") for name in op.remove)
            dropped.update(name.lower().encode("latin-1") for name, _ in op.set)
            for name, value in (*op.set, *op.add):
                lines.append(b"%b: %b\r\n" % (name.lower().encode("latin-1"), value.encode("latin-1")))
        return cls(frozenset(dropped), b"".join(lines))

    def overridden(self, names: frozenset[bytes]) -> HeaderPlan:
        """This plan, with `names` also dropped and none of its own lines for them: what a later stage (the
        CORS filter) sets replaces both the upstream's and the route's."""
        kept = [line for line in self.lines.splitlines(keepends=True) if line.partition(b":")[0] not in names]
        return HeaderPlan(self.dropped | names, b"".join(kept))


def header_plan(*ops: model.HeaderOps) -> HeaderPlan | None:
    used = tuple(op for op in ops if op != model.NO_HEADER_OPS)
    return HeaderPlan.of(used) if used else None


def _rewrite(route: CompiledRoute, block: model.RouteMatch | None, head: matching.RequestHead) -> tuple[str, str | None]:
    rewrite = route.spec.rewrite
    path = head.path
    if rewrite is None:
        return path, None
    if route.uri_regex is not None:
        uri = head.uri_path
        path = route.uri_regex.sub(rewrite.uri_regex[1], uri) + path[len(uri):]
    elif rewrite.uri is not None:
        prefix = matching.matched_prefix(block, head)
        path = rewrite.uri + path[len(prefix):]
    return path, rewrite.authority


def upstream_request_head(forwarding: Forwarding, exchange: Exchange, target: Target) -> bytes:
    head = exchange.head
    route = target.route
    host = exchange.host_header
    path = head.path
    plan = None
    if route is not None:
        if route.spec.rewrite is not None:
            path, authority = _rewrite(route, exchange.block, head)
            if authority:
                host = authority.encode("latin-1")
        if target.weighted is not None:
            plan = target.weighted.request
    method = exchange.method
    parts = [_METHOD_LINES.get(method) or _method_line(method), path.encode("latin-1"), b" HTTP/1.1\r\nhost: ",
             host, CRLF]
    append = parts.append
    has_request_id = False
    dropped = plan.dropped if plan is not None else ()
    tracer = forwarding.runtime.telemetry.tracer
    if tracer is not None:  # the caller's trace headers are replaced by this hop's
        dropped = tracing.TRACE_HEADERS.union(dropped) if dropped else tracing.TRACE_HEADERS
    gateway = forwarding.direction == model.GATEWAY
    if gateway:  # X-Forwarded-For is rewritten below, as one line
        if dropped is tracing.TRACE_HEADERS:
            dropped = _TRACE_AND_FORWARDED_FOR
        else:
            dropped = _FORWARDED_FOR.union(dropped) if dropped else _FORWARDED_FOR
    logged_id = user_agent = None  # for the access log: the last of each, as the client sent them
    traceparent = None  # for the tracer: the first traceparent, and whether any B3 header came
    b3 = False
    for name, value in head.headers:
        if name == REQUEST_ID:
            logged_id = value
            if name not in dropped:
                has_request_id = True
        elif name == USER_AGENT:
            user_agent = value
        if name in SKIP_UPSTREAM or name in dropped:
            if name in tracing.TRACE_HEADERS:
                if name != tracing.TRACEPARENT:
                    b3 = True
                elif traceparent is None:
                    traceparent = value
            continue
        parts += (name, b": ", value, CRLF)  # no bytes concatenated per header: the join copies once
    if plan is not None:
        append(plan.lines)
    if not has_request_id:
        logged_id = request_id()
        head.headers.append((REQUEST_ID, logged_id))
        parts += (b"x-request-id: ", logged_id, CRLF)
    exchange.request_id = logged_id
    exchange.user_agent = user_agent
    if tracer is not None:
        if exchange.trace is None:  # a retry keeps its span
            exchange.trace = tracer.begin(traceparent, b3, head.headers)
        append(tracing.upstream_lines(exchange.trace))
    if forwarding.direction != model.INBOUND:
        append(forwarding.runtime.peer_header(target))
    if gateway:
        append(forwarded_for(head, exchange.conn.peer_ip))
    if exchange.chunked_request:
        append(CHUNKED)
    append(CRLF)
    return b"".join(parts)


def _method_line(method: str) -> bytes:
    """`GET ` for GET: a request line's start, made once per method (llhttp knows a few dozen)."""
    line = _METHOD_LINES[method] = method.encode("latin-1") + b" "
    return line


_METHOD_LINES: dict[str, bytes] = {}


def forwarded_for(head: matching.RequestHead, peer_ip: str) -> bytes:
    """The X-Forwarded-For line a gateway sends on: what the client sent (every line, in order), then the
    address the gateway saw, in one header as Envoy writes it (use_remote_address). The rightmost entry,
    the one sidecars believe (`mesh.proxy.authz` remote_ip), is so always the gateway's own observation."""
    hops = [value for name, value in head.headers if name == FORWARDED_FOR]
    if peer_ip:
        hops.append(peer_ip.encode("latin-1"))
    return b"x-forwarded-for: " + b", ".join(hops) + CRLF if hops else b""


def redirect_location(redirect: model.Redirect, head: matching.RequestHead) -> bytes:
    scheme = redirect.scheme or head.scheme
    authority = redirect.authority or head.host
    # derivePort: FROM_REQUEST_PORT writes the request's port, FROM_PROTOCOL_DEFAULT none (80/443 implied).
    port = head.port if redirect.derive_port == model.FROM_REQUEST_PORT else redirect.port
    if port:
        authority = f"{authority}:{port}"
    elif not redirect.authority and not redirect.derive_port and head.port not in (80, 443):
        authority = f"{authority}:{head.port}"
    path = head.path
    if redirect.uri is not None:
        # Envoy keeps the request's query (strip_query is false) unless the new path brings its own.
        cut = path.find("?")
        path = redirect.uri + path[cut:] if cut >= 0 and "?" not in redirect.uri else redirect.uri
    return f"{scheme}://{authority}{path}".encode("latin-1")


def hash_key(lb: model.LoadBalancer, exchange: Exchange) -> str | None:
    """The consistent-hash key of a request; a missing cookie with a TTL is generated and set, like Envoy."""
    head = exchange.head
    if lb.hash_header:
        return head.header(lb.hash_header.lower().encode("latin-1"))
    if lb.hash_cookie:
        raw = head.header(b"cookie")
        if raw:
            cookie = SimpleCookie()
            cookie.load(raw)
            if lb.hash_cookie in cookie:
                return cookie[lb.hash_cookie].value
        if lb.hash_cookie_ttl is None:
            return None
        value = os.urandom(8).hex()
        attrs = f"; Max-Age={int(lb.hash_cookie_ttl)}" if lb.hash_cookie_ttl else ""
        if lb.hash_cookie_path:
            attrs += f"; Path={lb.hash_cookie_path}"
        for name, attr in lb.hash_cookie_attributes:  # Envoy's order: after Path, before HttpOnly
            attrs += f"; {name}={attr}" if attr else f"; {name}"
        exchange.extra_response_headers += f"set-cookie: {lb.hash_cookie}={value}{attrs}; HttpOnly\r\n".encode()
        return value
    if lb.hash_source_ip:
        return head.source_ip or None
    if lb.hash_query_parameter:
        return head.query().get(lb.hash_query_parameter)
    return None


def _request_id_prefix() -> str:
    """Per process: 76 random bits laid out as a UUID v4 (version nibble 4, variant 10xx)."""
    rand = os.urandom(10).hex()
    variant = "89ab"[int(rand[16], 16) & 3]
    return f"{rand[:8]}-{rand[8:12]}-4{rand[12:15]}-{variant}{rand[15:18]}-"


_REQUEST_ID_PREFIX = _request_id_prefix()
_request_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))
_LOW_HEX = tuple(b"%02x" % low for low in range(256))
_id_high = [-1, b""]  # the counter's bits above its low byte, and the id's text up to its last two digits


def request_id() -> bytes:
    """A UUID v4-shaped id: a random per-process prefix, then a 48-bit counter: unique, and cheap: the text up
    to the counter's last two hex digits changes once in 256 ids, and is formatted only then."""
    count = next(_request_counter) & 0xFFFFFFFFFFFF
    high = count >> 8
    if high != _id_high[0]:
        _id_high[0], _id_high[1] = high, f"{_REQUEST_ID_PREFIX}{high:010x}".encode()
    return _id_high[1] + _LOW_HEX[count & 0xFF]
