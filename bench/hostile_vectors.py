"""Hostile HTTP/1.1 requests (issue 8): smuggling vectors, malformed syntax, odd targets, upgrades, limits.

One catalogue for three readers: the mock-transport tests (tests/mesh/proxy/test_request_limits.py) assert
Weir's `expect` for each; the e2e test sends some over a real socket; `python -m bench.hostile` sends each
to a Weir sidecar and to nginx and writes docs/hostile-http.md. `expect` is a status (refused: never
forwarded, connection closed) or FORWARDED (normalised, then forwarded: `requests` of them, in order).
`envoy` is Envoy's answer where its documentation or code says it ("" when it does not).
"""

from __future__ import annotations

from dataclasses import dataclass

FORWARDED = "forwarded"
# The body limit the catalogue is run with (`--max-request-body-bytes`); off by default.
BODY_LIMIT = 1024
# Header and URL sizes just past Weir's limits (mesh.proxy.downstream).
OVER_URL = 16 * 1024 + 1
OVER_HEADER_BYTES = 60 * 1024 + 1
OVER_HEADER_COUNT = 101

HOST = b"Host: up:9080\r\n"


def _get(extra: bytes = b"", target: bytes = b"/", version: bytes = b"HTTP/1.1", method: bytes = b"GET") -> bytes:
    return method + b" " + target + b" " + version + b"\r\n" + HOST + extra + b"\r\n"


def _post(extra: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST / " + version + b"\r\n" + HOST + extra + b"\r\n" + body


CHUNKED = b"Transfer-Encoding: chunked\r\n"
EMPTY_CHUNKED = b"0\r\n\r\n"


@dataclass(frozen=True)
class Vector:
    name: str
    group: str
    data: bytes
    expect: int | str
    envoy: str = ""
    requests: int = 1  # FORWARDED: how many requests reach the upstream
    note: str = ""  # what Weir normalises, or why it answers as it does


VECTORS: tuple[Vector, ...] = (
    # -- message framing: the smuggling classics -------------------------------------------------------------
    Vector("cl-te", "framing", _post(b"Content-Length: 3\r\n" + CHUNKED, EMPTY_CHUNKED), 400, "400"),
    Vector("te-cl", "framing", _post(CHUNKED + b"Content-Length: 3\r\n", EMPTY_CHUNKED), 400, "400"),
    Vector("cl-duplicate-differ", "framing", _post(b"Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"), 400,
           "400"),
    Vector("cl-duplicate-same", "framing", _post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"), 400),
    Vector("cl-list", "framing", _post(b"Content-Length: 3, 3\r\n", b"abc"), 400),
    Vector("cl-negative", "framing", _post(b"Content-Length: -1\r\n"), 400, "400"),
    Vector("cl-plus-sign", "framing", _post(b"Content-Length: +3\r\n", b"abc"), 400),
    Vector("te-gzip-chunked", "framing", _post(b"Transfer-Encoding: gzip, chunked\r\n", EMPTY_CHUNKED), 501,
           "501", note="only `chunked` is understood (RFC 9112 §6.1: 501 for an unknown coding)"),
    Vector("te-chunked-gzip", "framing", _post(b"Transfer-Encoding: chunked, gzip\r\n", EMPTY_CHUNKED), 400,
           "501", note="llhttp: chunked must be the final coding"),
    Vector("te-identity-only", "framing", _post(b"Transfer-Encoding: identity\r\n", b"abc"), 501, "501"),
    Vector("te-identity-with-cl", "framing", _post(b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n", b"abc"),
           400, "400"),
    Vector("te-xchunked", "framing", _post(b"Transfer-Encoding: xchunked\r\n", EMPTY_CHUNKED), 501, "501"),
    Vector("te-chunked-twice", "framing", _post(b"Transfer-Encoding: chunked, chunked\r\n", EMPTY_CHUNKED), 400,
           "501"),
    Vector("te-two-lines", "framing", _post(CHUNKED + b"Transfer-Encoding: gzip\r\n", EMPTY_CHUNKED), 400, "501"),
    Vector("te-in-http10", "framing", _post(CHUNKED, EMPTY_CHUNKED, b"HTTP/1.0"), 400,
           "426 (HTTP/1.0 refused by default)", note="RFC 9112 §6.1: faulty framing"),
    Vector("te-uppercase", "framing", _post(b"Transfer-Encoding: CHUNKED\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
           FORWARDED, "forwarded", note="codings are case-insensitive; body re-chunked"),
    # -- chunked bodies --------------------------------------------------------------------------------------------
    Vector("chunk-size-invalid", "chunks", _post(CHUNKED, b"zz\r\nabc\r\n0\r\n\r\n"), 400, "400"),
    Vector("chunk-size-overflow", "chunks", _post(CHUNKED, b"FFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n"), 400, "400"),
    Vector("chunk-extension", "chunks", _post(CHUNKED, b"3;name=value\r\nabc\r\n0\r\n\r\n"), FORWARDED,
           "forwarded", note="extension dropped: the body is re-chunked"),
    Vector("chunk-extension-ctl", "chunks", _post(CHUNKED, b"3;\x01\r\nabc\r\n0\r\n\r\n"), 400),
    Vector("chunk-bare-lf", "chunks", _post(CHUNKED, b"3\nabc\n0\n\n"), 400),
    Vector("chunk-data-overrun", "chunks", _post(CHUNKED, b"3\r\nabcX0\r\n\r\n"), 400, "400"),
    Vector("chunk-trailer", "chunks", _post(CHUNKED, b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"), FORWARDED,
           "forwarded, trailers dropped", note="trailers dropped"),
    # -- header syntax -------------------------------------------------------------------------------------------
    Vector("obs-fold", "headers", _get(b"X-A: a\r\n b\r\n"), 400, "400"),
    Vector("space-before-colon", "headers", _get(b"X-A : b\r\n"), 400, "400"),
    Vector("space-before-colon-cl", "headers", _post(b"Content-Length : 3\r\n", b"abc"), 400, "400"),
    Vector("space-first-line", "headers", b"GET / HTTP/1.1\r\n Host: up:9080\r\n\r\n", 400),
    Vector("bare-lf", "headers", b"GET / HTTP/1.1\nHost: up:9080\n\n", 400),
    Vector("bare-lf-one-line", "headers", b"GET / HTTP/1.1\r\nHost: up:9080\nX-A: 1\r\n\r\n", 400),
    Vector("bare-cr", "headers", b"GET / HTTP/1.1\r\nHost: up:9080\rX-A: 1\r\n\r\n", 400, "400"),
    Vector("nul-in-name", "headers", _get(b"X-\x00A: b\r\n"), 400, "400"),
    Vector("nul-in-value", "headers", _get(b"X-A: b\x00c\r\n"), 400, "400"),
    Vector("ctl-in-value", "headers", _get(b"X-A: b\x01c\r\n"), 400, "400"),
    Vector("del-in-value", "headers", _get(b"X-A: b\x7fc\r\n"), 400),
    Vector("space-in-name", "headers", _get(b"X A: b\r\n"), 400, "400"),
    Vector("empty-name", "headers", _get(b": b\r\n"), 400),
    Vector("obs-text-value", "headers", _get(b"X-A: caf\xc3\xa9\r\n"), FORWARDED, "forwarded",
           note="obs-text is allowed in values (RFC 9110 §5.5): passed as is"),
    # -- request line and target ---------------------------------------------------------------------------------
    Vector("absolute-form", "target", _get(target=b"http://up:9080/x?y=1"), FORWARDED, "forwarded",
           note="origin form upstream; Host from the URL"),
    Vector("absolute-form-https", "target", _get(target=b"https://up/x"), 400,
           note="a TLS destination goes through CONNECT, which is not proxied"),
    Vector("absolute-form-userinfo", "target", _get(target=b"http://u:p@up:9080/x"), 400,
           note="RFC 9110 §4.2.4: userinfo is an error"),
    Vector("connect", "target", b"CONNECT up:9080 HTTP/1.1\r\n" + HOST + b"\r\n", 501,
           "404 (no CONNECT route)", note="no tunnels: 501, like an unimplemented method"),
    Vector("authority-form-get", "target", _get(target=b"up:9080"), 400, "400"),
    Vector("asterisk-get", "target", _get(target=b"*"), 400, note="only OPTIONS takes `*`"),
    Vector("asterisk-options", "target", _get(target=b"*", method=b"OPTIONS"), FORWARDED),
    Vector("fragment", "target", _get(target=b"/a#frag"), 400, "400"),
    Vector("space-in-target", "target", _get(target=b"/a b"), 400, "400"),
    Vector("ctl-in-target", "target", _get(target=b"/a\x01b"), 400, "400"),
    Vector("utf8-in-target", "target", _get(target=b"/caf\xc3\xa9"), 400),
    Vector("method-lowercase", "target", _get(method=b"get"), 400),
    Vector("method-unknown", "target", _get(method=b"FOO"), 400),
    Vector("http09", "target", b"GET /\r\n\r\n", 400),
    Vector("http20-request-line", "target", _get(version=b"HTTP/2.0"), 505),
    Vector("http12", "target", _get(version=b"HTTP/1.2"), 400),
    Vector("h2-preface", "target", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    Vector("leading-empty-line", "target", b"\r\n" + _get(), FORWARDED, "forwarded",
           note="RFC 9112 §2.2: one empty line before a request is ignored"),
    # -- Host ------------------------------------------------------------------------------------------------------
    Vector("host-missing", "host", b"GET / HTTP/1.1\r\n\r\n", 400, "400"),
    Vector("host-duplicate", "host", b"GET / HTTP/1.1\r\nHost: up:9080\r\nHost: other:9080\r\n\r\n", 400, "400",
           note="RFC 9112 §3.2"),
    Vector("host-invalid", "host", b"GET / HTTP/1.1\r\nHost: up:9080/x\r\n\r\n", 400, "400"),
    Vector("host-userinfo", "host", b"GET / HTTP/1.1\r\nHost: u@up:9080\r\n\r\n", 400),
    Vector("host-empty", "host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400, "400"),
    Vector("connection-nominates-header", "headers", _get(b"Connection: x-secret\r\nX-Secret: 1\r\n"), FORWARDED,
           note="a header named in Connection is hop-by-hop: dropped (RFC 9110 §7.6.1)"),
    Vector("connection-nominates-length", "headers",
           _post(b"Connection: content-length\r\nContent-Length: 3\r\n", b"abc"), 400,
           note="dropping it would unframe the body upstream"),
    # -- Expect ----------------------------------------------------------------------------------------------------
    Vector("expect-100-continue", "expect", _post(b"Expect: 100-continue\r\nContent-Length: 3\r\n", b"abc"),
           FORWARDED, "100 from the proxy, Expect not forwarded", note="100 sent by Weir; Expect dropped"),
    Vector("expect-unknown", "expect", _post(b"Expect: 200-ok\r\nContent-Length: 3\r\n", b"abc"), 417,
           note="RFC 9110 §10.1.1"),
    # -- upgrades --------------------------------------------------------------------------------------------------
    Vector("upgrade-websocket", "upgrade",
           _get(b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n"), FORWARDED, "403 without upgrade_configs",
           note="Upgrade and Connection dropped: a plain GET"),
    Vector("upgrade-h2c", "upgrade",
           _get(b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
           FORWARDED, "forwarded, Upgrade dropped", note="Upgrade and Connection dropped: a plain GET"),
    Vector("upgrade-then-request", "upgrade",
           _get(b"Connection: Upgrade\r\nUpgrade: websocket\r\n") + _get(target=b"/next"), FORWARDED,
           requests=2, note="the bytes after an upgrade request are the next request, never raw"),
    # -- pipelining ----------------------------------------------------------------------------------------------
    Vector("pipelined", "pipeline", _get(target=b"/a") + _get(target=b"/b"), FORWARDED, "answered in order",
           requests=2, note="answered in order"),
    Vector("pipelined-then-garbage", "pipeline", _get(target=b"/a") + b"GARBAGE\r\n\r\n", FORWARDED, requests=1,
           note="the first is answered, then 400 and close"),
    # -- limits ----------------------------------------------------------------------------------------------------
    Vector("url-too-long", "limits", _get(target=b"/" + b"a" * OVER_URL), 414,
           "431 (the URL counts in its header limit)"),
    Vector("header-bytes", "limits", _get(b"X-Big: " + b"a" * OVER_HEADER_BYTES + b"\r\n"), 431, "431"),
    Vector("header-count", "limits", _get(b"X-H: 1\r\n" * OVER_HEADER_COUNT), 431, "431"),
    Vector("body-over-limit-cl", "limits", _post(b"Content-Length: %d\r\n" % (BODY_LIMIT + 1),
                                                  b"a" * (BODY_LIMIT + 1)), 413, "413 (with a request limit)",
           note=f"with --max-request-body-bytes {BODY_LIMIT}"),
    Vector("body-over-limit-chunked", "limits",
           _post(CHUNKED, b"%x\r\n%s\r\n0\r\n\r\n" % (BODY_LIMIT + 1, b"a" * (BODY_LIMIT + 1))), 413,
           "413 (with a request limit)", note=f"with --max-request-body-bytes {BODY_LIMIT}"),
)

BY_NAME = {vector.name: vector for vector in VECTORS}
