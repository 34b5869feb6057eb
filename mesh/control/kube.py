"""The control plane's Kubernetes REST API access: one injected call, `Transport(method, path, body)`.

Only what the CA needs goes through here: the CA Secret (`mesh.control.ca_store.KubernetesStore`) and
TokenReview (`mesh.control.authn.TokenReviewer`). `InCluster` is the real transport, with the pod's
service-account credentials (token re-read on each call: projected tokens rotate); tests replace it with
recorded API answers, so no cluster is needed.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# (method, path, JSON body or None) -> (HTTP status, JSON answer: an object or a Kubernetes Status)
Transport = Callable[[str, str, "dict[str, Any] | None"], Awaitable[tuple[int, dict[str, Any]]]]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a Secret or a TokenReview is a few KB; bounds a confused API server


class KubeError(Exception):
    """The API server could not be reached or answered something unusable."""


def status_message(status: int, doc: dict[str, Any]) -> str:
    """The `message` of a Kubernetes Status answer, else the HTTP status."""
    message = doc.get("message") if isinstance(doc, dict) else None
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


class InCluster:
    """The API server as seen from a pod (KUBERNETES_SERVICE_HOST/PORT, the mounted service account)."""

    def __init__(self, host: str | None = None, port: str | None = None,
                 account_dir: Path = SERVICE_ACCOUNT_DIR) -> None:
        host = host or os.environ.get("KUBERNETES_SERVICE_HOST")
        port = port or os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeError("not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set")
        self.base = f"https://{host}:{port}"
        self.token_file = account_dir / "token"
        self.ssl = ssl.create_default_context(cafile=str(account_dir / "ca.crt"))
        self._session = None

    async def __call__(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        import aiohttp  # the local control plane never needs it here

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}", "Accept": "application/json"}
        try:
            async with self._session.request(method, self.base + path, json=body, headers=headers,
                                             ssl=self.ssl) as resp:
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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
