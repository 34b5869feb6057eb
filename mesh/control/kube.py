"""The control plane's Kubernetes REST API access: a request call and a watch stream, nothing more.

`Transport(method, path, body)` answers one JSON request; `Api` adds `stream(path)`, the lines of a
watch as decoded events. `ApiServer` implements both over the maintained client kubernetes_asyncio: its
`ApiClient` holds the host, TLS and credentials (`Configuration`) and sends every request
(`ApiClient.call_api`); this module only keeps answers as plain dicts and bounds their size. `in_cluster()`
is the API server as seen from a pod (`load_incluster_config`: the service account's CA and token, the
token re-read as the kubelet rotates it), `from_kubeconfig()` the one a kubeconfig names, for running
outside a pod. Users: the CA Secret (`mesh.control.ca_store`), TokenReview (`mesh.control.authn`), the
list+watch loop of `mesh.control.kube_watch` and the root-certificate ConfigMaps
(`mesh.control.root_publisher`). Tests point `ApiServer.at(url)` at a fake API server, or replace the
transport with recorded answers, so no cluster is needed. kubernetes_asyncio is imported on first use:
the local control plane never needs it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient, Configuration

# (method, path, JSON body or None) -> (HTTP status, JSON answer: an object or a Kubernetes Status)
Transport = Callable[[str, str, "dict[str, Any] | None"], Awaitable[tuple[int, dict[str, Any]]]]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a list page of 500 objects; bounds a confused API server
MAX_EVENT_BYTES = 4 * 1024 * 1024  # one watch event: one object (etcd's own limit is 1.5 MB)
WATCH_READ_MARGIN_S = 30.0  # the stream may stay silent this long past the server-side timeoutSeconds
AUTH_SETTINGS = ["BearerToken"]  # kubernetes_asyncio's name for `Authorization: Bearer <token>`


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


def _failures() -> tuple[type[BaseException], ...]:
    """What a request through the client raises when the API server cannot be reached or understood."""
    import aiohttp
    from kubernetes_asyncio.client.exceptions import OpenApiException

    return (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError, OpenApiException,
            TimeoutError, OSError)


class ApiServer:
    """The API server a kubernetes_asyncio `ApiClient` talks to (its `Configuration`: host, TLS, token).

    Every call is `ApiClient.call_api(path, method, query_params, body, auth_settings=["BearerToken"],
    _preload_content=False)`: the client builds the URL, serializes the body, adds the (refreshed) token
    and sends it on its aiohttp session; the raw response is read here, bounded, as JSON. Any HTTP status
    is an answer (`(status, Status dict)`), as the `Api` protocol promises; only an unreachable server or
    an unusable body is a `KubeError`."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    @classmethod
    def at(cls, host: str, token: str | None = None, *, verify_ssl: bool = True,
           ca_cert: str | None = None) -> ApiServer:
        """An API server at `host` (`https://host:port`, or a test's `http://127.0.0.1:port`)."""
        from kubernetes_asyncio.client import ApiClient, Configuration

        config = Configuration(host=host.rstrip("/"), api_key={"BearerToken": token} if token else None,
                               api_key_prefix={"BearerToken": "Bearer"} if token else None)
        config.verify_ssl = verify_ssl
        config.ssl_ca_cert = ca_cert
        return cls(ApiClient(config))

    @property
    def configuration(self) -> Configuration:
        return self.client.configuration

    async def _send(self, method: str, path: str, body: dict[str, Any] | None, timeout: Any):
        """The raw aiohttp response of `method path` (the caller releases it)."""
        parts = urlsplit(path)
        return await self.client.call_api(
            parts.path, method, query_params=parse_qsl(parts.query, keep_blank_values=True) or None,
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body, auth_settings=AUTH_SETTINGS, _preload_content=False, _request_timeout=timeout)

    async def __call__(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        try:
            async with await self._send(method, path, body, REQUEST_TIMEOUT_S) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                status = resp.status
        except _failures() as exc:
            raise KubeError(f"{method} {path}: {_reason(exc)}") from None
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
            async with await self._send("GET", path, None, timeout) as resp:
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
        except _failures() as exc:
            raise KubeError(f"watch {path}: {_reason(exc)}") from None

    async def close(self) -> None:
        await self.client.close()


def _reason(exc: BaseException) -> str:
    status = getattr(exc, "status", None)  # an ApiException the client raised itself (status 0: no request)
    reason = getattr(exc, "reason", None) if status is not None else None
    return str(reason or exc or type(exc).__name__).strip()


def _event(line: bytes, path: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        raise KubeError(f"watch {path}: an event that is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise KubeError(f"watch {path}: an event without an object")
    return event


def in_cluster(account_dir: Path = SERVICE_ACCOUNT_DIR) -> ApiServer:
    """The API server as seen from a pod (KUBERNETES_SERVICE_HOST/PORT, the mounted service account).
    `load_incluster_config` re-reads the token file (every minute): projected tokens rotate."""
    from kubernetes_asyncio.client import ApiClient, Configuration
    from kubernetes_asyncio.config import ConfigException, load_incluster_config

    config = Configuration()
    try:
        load_incluster_config(client_configuration=config, try_refresh_token=True,
                              token_filename=str(account_dir / "token"), cert_filename=str(account_dir / "ca.crt"))
    except ConfigException as exc:
        raise KubeError(f"not running in a Kubernetes pod: {exc}") from None
    return ApiServer(ApiClient(config))


async def from_kubeconfig(path: str | None = None, context: str | None = None) -> ApiServer:
    """The API server of a kubeconfig (default ~/.kube/config, its current context): running outside a pod."""
    from kubernetes_asyncio.client import ApiClient, Configuration
    from kubernetes_asyncio.config import ConfigException, load_kube_config

    config = Configuration()
    try:
        await load_kube_config(config_file=path, context=context, client_configuration=config,
                               persist_config=False)
    except (ConfigException, OSError, ValueError) as exc:
        raise KubeError(f"kubeconfig {path or '~/.kube/config'}: {exc}") from None
    return ApiServer(ApiClient(config))


async def connect(kubeconfig: str | None = None, context: str | None = None) -> ApiServer:
    """`from_kubeconfig` when a kubeconfig is given, else `in_cluster`."""
    if kubeconfig:
        return await from_kubeconfig(kubeconfig, context)
    return in_cluster()
