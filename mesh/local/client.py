"""The one HTTP client of the local runtime: meshctl and the supervisor talk to the control plane, the
proxies' admin ports and the apps' chaos ports through here.

`urllib.request` with short timeouts, so meshctl starts fast (no aiohttp on the CLI path). Proxy
environment variables are ignored: every endpoint is on loopback.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.local import errors

TIMEOUT = 5.0  # seconds; every endpoint is local, so anything slower is stuck
PROBE_TIMEOUT = 0.5  # readiness probes run every tick of the supervisor
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request(method: str, url: str, body: Any = None, timeout: float = TIMEOUT,
            headers: Mapping[str, str] | None = None) -> Response:
    """Send a request (a JSON body when given); any HTTP status is a Response, no answer is Unreachable."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return Response(resp.status, resp.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read())
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise errors.Unreachable(f"{method} {url}: no answer ({reason})") from None


def call(method: str, url: str, body: Any = None, timeout: float = TIMEOUT) -> Response:
    """Like `request`, but an error status raises RequestFailed carrying the endpoint's own error text."""
    resp = request(method, url, body, timeout)
    if resp.status >= 400:
        raise errors.RequestFailed(error_text(resp), resp.status)
    return resp


def error_text(resp: Response) -> str:
    """The `error` field of a JSON error body, else the body itself."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("error"):
        return str(doc["error"])
    return resp.text().strip() or f"HTTP {resp.status}"


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when `url` answers 2xx within `timeout`."""
    try:
        return 200 <= request("GET", url, timeout=timeout).status < 300
    except errors.Unreachable:
        return False
