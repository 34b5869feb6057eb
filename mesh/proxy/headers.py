"""HTTP/1.1 message heads as the proxy rewrites them: upstream request head and downstream response head.

Hop-by-hop headers never cross the proxy; framing is re-decided per side (content-length passed through,
chunked re-encoded). Istio header operations (`headers.request|response.set|add|remove`) and rewrites are
applied here. Everything returns bytes ready for one `transport.write`.
"""

from __future__ import annotations

import os
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING

from mesh.proxy import matching, replies
from mesh.view import model

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange
    from mesh.proxy.forwarding import Forwarding, Target
    from mesh.proxy.routing import CompiledRoute

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer", b"upgrade",
    b"proxy-authorization", b"proxy-authenticate", b"expect",
})
# Metadata exchange between sidecars (Istio's x-envoy-peer-metadata): "ns;workload;app;version;service".
PEER_HEADER = b"x-weir-peer"
REQUEST_ID = b"x-request-id"
CRLF = b"\r\n"
CHUNKED = b"transfer-encoding: chunked\r\n"
CLOSE = b"connection: close\r\n"


def _ops_apply(parts: list[bytes], ops: model.HeaderOps) -> None:
    for name, value in ops.set:
        parts += [name.lower().encode("latin-1"), b": ", value.encode("latin-1"), CRLF]
    for name, value in ops.add:
        parts += [name.lower().encode("latin-1"), b": ", value.encode("latin-1"), CRLF]


def _dropped(ops: tuple[model.HeaderOps, ...]) -> frozenset[bytes]:
    names = set()
    for op in ops:
        names.update(n.lower().encode("latin-1") for n in op.remove)
        names.update(n.lower().encode("latin-1") for n, _ in op.set)
    return frozenset(names)


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
    ops: tuple[model.HeaderOps, ...] = ()
    if route is not None:
        spec = route.spec
        if spec.rewrite is not None:
            path, authority = _rewrite(route, exchange.block, head)
            if authority:
                host = authority.encode("latin-1")
        weighted = target.weighted
        ops = tuple(op for op in (spec.request_headers, weighted.request_headers if weighted else None)
                    if op is not None and op != model.NO_HEADER_OPS)
    dropped = _dropped(ops) if ops else None
    parts = [exchange.method.encode(), b" ", path.encode("latin-1"), b" HTTP/1.1\r\nhost: ", host, CRLF]
    has_request_id = False
    for name, value in head.headers:
        if name in HOP_BY_HOP or name == b"host" or name == PEER_HEADER:
            continue
        if name == REQUEST_ID:
            has_request_id = True
        if dropped and name in dropped:
            continue
        parts += [name, b": ", value, CRLF]
    for op in ops:
        _ops_apply(parts, op)
    if not has_request_id:
        rid = request_id()
        head.headers.append((REQUEST_ID, rid))
        parts += [b"x-request-id: ", rid, CRLF]
    if forwarding.direction != model.INBOUND:
        parts.append(forwarding.runtime.peer_header(target))
    if exchange.chunked_request:
        parts.append(CHUNKED)
    parts.append(CRLF)
    return b"".join(parts)


def downstream_response_head(exchange: Exchange, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = [replies.status_line(status)]
    ops = exchange.response_ops
    if ops is not None:
        ops = tuple(op for op in ops if op != model.NO_HEADER_OPS)
    dropped = _dropped(ops) if ops else None
    has_length = False
    for name, value in headers:
        if name in HOP_BY_HOP or name == PEER_HEADER:
            continue
        if dropped and name in dropped:
            continue
        if name == b"content-length":
            has_length = True
        parts += [name, b": ", value, CRLF]
    if ops:
        for op in ops:
            _ops_apply(parts, op)
    bodyless = status < 200 or status in (204, 304) or exchange.is_head
    if not has_length and not bodyless:
        if exchange.conn.http11:
            exchange.chunked_response = True
            parts.append(CHUNKED)
        else:
            exchange.keep_alive = False
    if exchange.extra_response_headers:
        parts.append(exchange.extra_response_headers)
    if not exchange.keep_alive:
        parts.append(CLOSE)
    parts.append(CRLF)
    return b"".join(parts)


def redirect_location(redirect: model.Redirect, head: matching.RequestHead) -> bytes:
    scheme = redirect.scheme or head.scheme
    authority = redirect.authority or head.host
    if redirect.port:
        authority = f"{authority}:{redirect.port}"
    elif not redirect.authority and head.port not in (80, 443):
        authority = f"{authority}:{head.port}"
    path = redirect.uri if redirect.uri is not None else head.path
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
        exchange.extra_response_headers += f"set-cookie: {lb.hash_cookie}={value}{attrs}; HttpOnly\r\n".encode()
        return value
    if lb.hash_source_ip:
        return head.source_ip or None
    if lb.hash_query_parameter:
        return head.query().get(lb.hash_query_parameter)
    return None


def request_id() -> bytes:
    """A UUID4-shaped id, cheaper than uuid.uuid4()."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}".encode()
