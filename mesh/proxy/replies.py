"""Replies the proxy gives itself, and the one mapping from failure to status + response flag.

Every local reply carries an Envoy/Istio response flag (NR, UF, UH, URX, UC, ...) so metrics and access
logs explain it (DESIGN.md principle 8). Status lines are precomputed bytes: no formatting per request.
"""

from __future__ import annotations

from http import HTTPStatus

STATUS_LINES: dict[int, bytes] = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus
}


def status_line(code: int) -> bytes:
    line = STATUS_LINES.get(code)
    if line is None:
        line = STATUS_LINES[code] = f"HTTP/1.1 {code} Unknown\r\n".encode()
    return line


class ProxyError(Exception):
    """A failure the proxy answers itself. Subclasses fix status, flag and the body text."""

    status = 503
    flag = "-"
    body = "proxy error"


class NoRoute(ProxyError):
    status, flag, body = 404, "NR", "route not found"


class RegistryOnly(ProxyError):
    status, flag, body = 502, "NR", "destination not in the mesh registry (outboundTrafficPolicy REGISTRY_ONLY)"


class NoHealthyUpstream(ProxyError):
    status, flag, body = 503, "UH", "no healthy upstream"


class ConnectFailure(ProxyError):
    status, flag = 503, "UF"
    body = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"


class UpstreamReset(ProxyError):
    status, flag = 503, "UC"
    body = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"


class Overflow(ProxyError):
    status, flag = 503, "UO"
    body = "upstream connect error or disconnect/reset before headers. reset reason: overflow"


class UpstreamTimeout(ProxyError):
    status, flag, body = 504, "UT", "upstream request timeout"


class UpstreamProtocolError(ProxyError):
    status, flag = 502, "UPE"
    body = "upstream sent an invalid HTTP response"


class Denied(ProxyError):
    """AuthorizationPolicy refused the request (Envoy's RBAC filter)."""

    status, flag, body = 403, "RBAC", "RBAC: access denied"


class Unauthenticated(ProxyError):
    """RequestAuthentication: a JWT was presented and failed verification; the body is Envoy's reason.
    Envoy's jwt_authn sets no response flag, so neither do we."""

    status, flag, body = 401, "-", "Jwt verification fails"

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or self.body)
        if reason:
            self.body = reason


class BadRequest(ProxyError):
    status, flag, body = 400, "DPE", "Bad Request"


class HeadersTooLarge(ProxyError):
    status, flag, body = 431, "DPE", "Request Header Fields Too Large"


class UriTooLong(ProxyError):
    status, flag, body = 414, "DPE", "URI Too Long"


class RequestTimeout(ProxyError):
    """The client took too long to send the request's headers or body (mesh.proxy.request_limits)."""

    status, flag, body = 408, "DPE", "Request Timeout"


class PayloadTooLarge(ProxyError):
    status, flag, body = 413, "DPE", "Payload Too Large"


class ExpectationFailed(ProxyError):
    status, flag, body = 417, "DPE", "Expectation Failed"


class TransferEncodingNotImplemented(ProxyError):
    status, flag, body = 501, "DPE", "Not Implemented"


class MethodNotImplemented(ProxyError):
    """CONNECT: the proxy does not tunnel."""

    status, flag, body = 501, "DPE", "Not Implemented"


class VersionNotSupported(ProxyError):
    status, flag, body = 505, "DPE", "HTTP Version Not Supported"


def local_reply(
    status: int, body: bytes, keep_alive: bool, extra_headers: bytes = b"", content_type: bytes = b"text/plain",
    head: bool = False,
) -> bytes:
    """A complete HTTP/1.1 response in one buffer: one write.

    `head`: the answer to a HEAD request: the same head (content-length of the body a GET would get), no
    body, or a keep-alive client would read the body as the start of its next response. An empty
    `content_type` sends none (a CORS preflight's answer, headers only)."""
    return b"".join(
        (
            status_line(status),
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\ncontent-type: " + content_type if content_type else b"",
            b"\r\nserver: weir\r\n",
            extra_headers,
            b"" if keep_alive else b"connection: close\r\n",
            b"\r\n",
            b"" if head else body,
        )
    )
