"""The control plane's Kubernetes REST API access: a request call and a watch stream, nothing more.

`Transport(method, path, body)` answers one JSON request; `Api` adds `stream(path)`, the lines of a
watch as decoded events. `ApiServer` implements both over aiohttp (already a dependency); `InCluster` is
the API server as seen from a pod, with the service-account credentials (token re-read on each call:
projected tokens rotate). Users: the CA Secret (`mesh.control.ca_store`), TokenReview
(`mesh.control.authn`), the list+watch loop of `mesh.control.kube_watch` and the root-certificate
ConfigMaps (`mesh.control.root_publisher`). Tests point `ApiServer` at a fake API server, or replace the
transport with recorded answers, so no cluster is needed.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

# (method, path, JSON body or None) -> (HTTP status, JSON answer: an object or a Kubernetes Status)
Transport = Callable[[str, str, "dict[str, Any] | None"], Awaitable[tuple[int, dict[str, Any]]]]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a list page of 500 objects; bounds a confused API server
MAX_EVENT_BYTES = 4 * 1024 * 1024  # one watch event: one object (etcd's own limit is 1.5 MB)
WATCH_READ_MARGIN_S = 30.0  # the stream may stay silent this long past the server-side timeoutSeconds


class KubeError(Exception):
    """The API server could not be reached or answered something unusable."""


class StreamError(KubeError):
    """A watch could not be opened: `status` is the HTTP status, `doc` the Kubernetes Status."""

    def __init__(self, message: str, status: int, doc: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.doc = doc


class Api(Protocol):
    """A `Transport` that can also stream a watch (`GET path` with `watch=1` in its query)."""

    async def __call__(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]: ...

    def stream(self, path: str, read_timeout: float) -> AsyncIterator[dict[str, Any]]: ...


def status_message(status: int, doc: dict[str, Any]) -> str:
    """The `message` of a Kubernetes Status answer, else the HTTP status."""
    message = doc.get("message") if isinstance(doc, dict) else None
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


class ApiServer:
    """An API server at `base` (`https://host:port`); `token` gives the bearer token for each call."""

    def __init__(self, base: str, token: Callable[[], str | None] = lambda: None,
                 context: ssl.SSLContext | None = None) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.ssl = context
        self._session = None

    def _headers(self) -> dict[str, str]:
        token = self.token()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _client(self):
        import aiohttp  # the local control plane never needs it here

        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def __call__(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        try:
            async with self._client().request(method, self.base + path, json=body, headers=self._headers(),
                                              ssl=self.ssl, timeout=timeout) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeError(f"{method} {path}: {exc or type(exc).__name__}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise KubeError(f"{method} {path}: answer larger than {MAX_ANSWER_BYTES} bytes")
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            raise KubeError(f"{method} {path}: HTTP {status} with a body that is not JSON") from None
        return status, doc if isinstance(doc, dict) else {}

    async def stream(self, path: str, read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch, one JSON object a line, until the server ends the stream.
        Raises StreamError when the watch is refused (e.g. 410 Gone), KubeError when it breaks."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT_S,
                                        sock_read=read_timeout + WATCH_READ_MARGIN_S)
        try:
            async with self._client().get(self.base + path, headers=self._headers(), ssl=self.ssl,
                                          timeout=timeout) as resp:
                if resp.status != 200:
                    raw = await resp.content.read(MAX_EVENT_BYTES)
                    try:
                        doc = json.loads(raw or b"{}")
                    except ValueError:
                        doc = {}
                    doc = doc if isinstance(doc, dict) else {}
                    raise StreamError(f"watch {path}: {status_message(resp.status, doc)}", resp.status, doc)
                while line := await resp.content.readline(max_line_length=MAX_EVENT_BYTES):
                    if line.strip():
                        yield _event(line, path)
        except (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError, TimeoutError, OSError) as exc:
            raise KubeError(f"watch {path}: {exc or type(exc).__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _event(line: bytes, path: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        raise KubeError(f"watch {path}: an event that is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise KubeError(f"watch {path}: an event without an object")
    return event


class InCluster(ApiServer):
    """The API server as seen from a pod (KUBERNETES_SERVICE_HOST/PORT, the mounted service account)."""

    def __init__(self, host: str | None = None, port: str | None = None,
                 account_dir: Path = SERVICE_ACCOUNT_DIR) -> None:
        host = host or os.environ.get("KUBERNETES_SERVICE_HOST")
        port = port or os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeError("not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 cluster
        self.token_file = account_dir / "token"
        super().__init__(f"https://{host}:{port}", lambda: self.token_file.read_text().strip(),
                         ssl.create_default_context(cafile=str(account_dir / "ca.crt")))
