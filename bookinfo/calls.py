"""The one outbound call each app makes: header propagation, timeouts and error mapping.

Owns `Callee` (service name, base URL, timeout), `Caller` (a shared keep-alive `ClientSession`, sending
through the sidecar's outbound port as an HTTP forward proxy when one is set) and `CallError`, the single
exception `server` maps to a `{"error", "service"}` reply: 502 connect failure, 504 timeout, callee's 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

# Trace and identity headers copied from the inbound request to the outbound call (Istio's list).
PROPAGATED_HEADERS = frozenset({"end-user", "x-request-id", "traceparent", "tracestate", "b3"})
PROPAGATED_PREFIX = "x-b3-"

# Largest callee body read; protects the app from a runaway or misrouted upstream.
MAX_BODY_BYTES = 1 << 20
# Keep-alive pool towards the callee (or the sidecar): bounds open upstream connections.
POOL_SIZE = 100
# Idle keep-alive connections are closed after this many seconds.
KEEPALIVE_S = 30.0


@dataclass(frozen=True, slots=True)
class Callee:
    """The service an app calls: `name` is what error replies report in `service`."""

    name: str
    url: str
    timeout: float


class CallError(Exception):
    """A failed call, already carrying the status the caller answers with."""

    def __init__(self, status: int, message: str, service: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.service = service

    def body(self) -> dict[str, str]:
        return {"error": self.message, "service": self.service}


def propagated_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The subset of `headers` an app forwards to its callee."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in PROPAGATED_HEADERS or lower.startswith(PROPAGATED_PREFIX):
            out[lower] = value
    return out


def new_session() -> aiohttp.ClientSession:
    """The shared session: pooled keep-alive, environment proxies ignored (`Caller` passes `proxy=`)."""
    connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=KEEPALIVE_S)
    return aiohttp.ClientSession(connector=connector, trust_env=False, raise_for_status=False)


class Caller:
    """Makes GET calls to one callee and returns the decoded JSON, or raises `CallError`."""

    __slots__ = ("_session", "_proxy", "callee")

    def __init__(self, session: aiohttp.ClientSession, callee: Callee, proxy: str | None = None) -> None:
        self._session = session
        self._proxy = proxy
        self.callee = callee

    def __repr__(self) -> str:
        return (
            f"Caller({self.callee.name} {self.callee.url} timeout={self.callee.timeout}s proxy={self._proxy})"
        )

    async def get_json(self, path: str, inbound_headers: Mapping[str, str]) -> Any:
        callee = self.callee
        url = callee.url.rstrip("/") + path
        timeout = aiohttp.ClientTimeout(total=callee.timeout)
        headers = propagated_headers(inbound_headers)
        headers["accept"] = "application/json"
        try:
            async with self._session.get(url, headers=headers, proxy=self._proxy, timeout=timeout) as resp:
                body = await _read_bounded(resp)
                status = resp.status
        except TimeoutError as exc:  # before ClientError: aiohttp's timeouts are both
            raise CallError(
                504, f"{callee.name} did not answer within {callee.timeout:g}s", callee.name
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise CallError(502, f"{callee.name} sent a bad body: {_describe(exc)}", callee.name) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise CallError(502, f"cannot reach {callee.name}: {_describe(exc)}", callee.name) from exc
        return _decode(callee.name, status, body)


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise aiohttp.ClientPayloadError(f"body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(service: str, status: int, body: bytes) -> Any:
    """Map the callee's answer: 2xx JSON passes, 5xx is passed on, anything else is a bad gateway."""
    if 200 <= status < 300:
        try:
            return json.loads(body)
        except ValueError as exc:
            raise CallError(
                502, f"{service} answered {status} with a body that is not JSON", service
            ) from exc
    reason = _error_text(body)
    message = f"{service} answered {status}" + (f": {reason}" if reason else "")
    raise CallError(status if status >= 500 else 502, message, service)


def _error_text(body: bytes) -> str:
    """The callee's own error message when it sent one, else the start of its body."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return decoded["error"]
    return ""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__
