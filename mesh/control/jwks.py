"""JWKS resolution: the I/O half of RequestAuthentication, kept out of the pure builder.

istiod fetches a jwtRule's `jwksUri` (or the issuer's OpenID discovery document) and inlines the key set
in what it sends to Envoy; Weir does the same. `JwksResolver.resolve(resources)` runs when the control
plane takes a snapshot and returns {source: key set text} for `Snapshot.jwks`: `file://` sources are
read on the spot, http(s) ones come from a cache that background fetches fill (with the rule's
`timeout`, and re-fetched every `REFRESH_INTERVAL`). A fetch that completes with a different key set
calls `on_change`, so the plane takes a new snapshot. A source with no good key set yet is left out:
`mesh.control.security` then gives its rules Istio's fake key set, which rejects every token of that
issuer. A failed refresh keeps the last good key set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from mesh.control import security

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 5.0  # seconds: Istio's jwtRule `timeout` default
REFRESH_INTERVAL = 20 * 60.0  # seconds between re-fetches of a good key set (Istio's default, 20 min)
RETRY_INTERVAL = 30.0  # seconds before a failed source is tried again
MAX_JWKS_BYTES = 1 << 20  # a larger document is refused: bounds the control plane's memory per source
FILE_SCHEME = "file://"


class JwksError(Exception):
    """A source that did not yield a JSON Web Key Set."""


@dataclass(slots=True)
class _Entry:
    text: str | None = None  # the last good key set
    checked_at: float = float("-inf")  # when the last fetch ended (or the file was read)
    ok: bool = False
    error: str = ""
    task: asyncio.Task[None] | None = None


def check(text: str) -> str:
    """A JWKS document as text; raises JwksError when it is not one."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise JwksError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise JwksError("not a JSON Web Key Set: 'keys' must be a non-empty list")
    return text


class JwksResolver:
    def __init__(
        self,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        refresh_interval: float = REFRESH_INTERVAL,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self.on_change = on_change
        self.clock = clock
        self.refresh_interval = refresh_interval
        self.retry_interval = retry_interval
        self._entries: dict[str, _Entry] = {}
        self._timeouts: dict[str, float | None] = {}  # the sources the current config needs
        self._session: aiohttp.ClientSession | None = None
        self._ticker: asyncio.Task[None] | None = None

    # -- the snapshot side (sync) -----------------------------------------------------------------------

    def resolve(self, resources: Iterable[Any]) -> dict[str, str]:
        """{source: key set} for every source the resources need and that has a good key set."""
        self._timeouts = security.jwks_sources(resources)
        out = {}
        for source in sorted(self._timeouts):
            entry = self._entries.setdefault(source, _Entry())
            if source.startswith(FILE_SCHEME):
                self._read_file(source, entry)
            elif self._due(entry):
                self._schedule(source, entry)
            if entry.text is not None:
                out[source] = entry.text
        for source in set(self._entries) - set(self._timeouts):  # no longer used: forget it
            entry = self._entries.pop(source)
            if entry.task is not None:
                entry.task.cancel()
        return out

    def _due(self, entry: _Entry) -> bool:
        if entry.task is not None and not entry.task.done():
            return False
        wait = self.refresh_interval if entry.ok else self.retry_interval
        return self.clock() - entry.checked_at >= wait

    def _schedule(self, source: str, entry: _Entry) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop yet (the plane's first snapshot): `prefetch` fills the cache
            return
        entry.task = loop.create_task(self._refresh(source, entry), name=f"jwks {source}")

    def _read_file(self, source: str, entry: _Entry) -> None:
        try:
            path = Path(unquote(urlsplit(source).path))
            with path.open("rb") as f:
                data = f.read(MAX_JWKS_BYTES + 1)
            if len(data) > MAX_JWKS_BYTES:
                raise JwksError(f"larger than {MAX_JWKS_BYTES} bytes")
            self._good(source, entry, check(data.decode()))
        except (OSError, UnicodeDecodeError, JwksError) as exc:
            self._failed(source, entry, exc)

    # -- fetching (async) -------------------------------------------------------------------------------

    async def prefetch(self, resources: Iterable[Any]) -> None:
        """Fetch every http(s) source the resources need now (before the first snapshot)."""
        self._timeouts = security.jwks_sources(resources)
        jobs = []
        for source in sorted(self._timeouts):
            if not source.startswith(FILE_SCHEME):
                entry = self._entries.setdefault(source, _Entry())
                if entry.task is not None and not entry.task.done():
                    jobs.append(asyncio.shield(entry.task))  # already on its way (an earlier snapshot)
                elif self._due(entry):
                    jobs.append(self._refresh(source, entry, notify=False))
        await asyncio.gather(*jobs, return_exceptions=True)

    async def start(self) -> None:
        """Re-check the sources in use every `retry_interval`: stale key sets, failed ones, files."""
        self._ticker = asyncio.create_task(self._tick(), name="jwks-refresh")

    async def close(self) -> None:
        tasks = [t for t in (self._ticker, *(e.task for e in self._entries.values())) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._ticker = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval)
            before = {s: e.text for s, e in self._entries.items()}
            for source, entry in list(self._entries.items()):
                if source.startswith(FILE_SCHEME):
                    self._read_file(source, entry)
                elif self._due(entry):
                    self._schedule(source, entry)
            if any(e.text != before.get(s) for s, e in self._entries.items()):
                self.on_change()

    async def _refresh(self, source: str, entry: _Entry, notify: bool = True) -> None:
        before = entry.text
        timeout = self._timeouts.get(source) or FETCH_TIMEOUT
        try:
            url = source
            if source.endswith(security.OPENID_CONFIGURATION):
                url = _jwks_uri(await self._get(source, timeout))
            self._good(source, entry, check(await self._get(url, timeout)))
        except (aiohttp.ClientError, TimeoutError, ValueError, JwksError) as exc:  # ValueError: bad URL, UTF-8
            self._failed(source, entry, exc)
        if notify and entry.text != before and self._entries.get(source) is entry:
            self.on_change()

    async def _get(self, url: str, timeout: float) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                raise JwksError(f"GET {url}: HTTP {resp.status}")
            data = await resp.content.read(MAX_JWKS_BYTES + 1)
        if len(data) > MAX_JWKS_BYTES:
            raise JwksError(f"GET {url}: larger than {MAX_JWKS_BYTES} bytes")
        return data.decode()

    # -- bookkeeping ------------------------------------------------------------------------------------

    def _good(self, source: str, entry: _Entry, text: str) -> None:
        if entry.error or entry.text is None:
            log.info("jwks %s: key set loaded", source)
        entry.text, entry.ok, entry.error, entry.checked_at = text, True, "", self.clock()

    def _failed(self, source: str, entry: _Entry, exc: BaseException) -> None:
        error = str(exc) or type(exc).__name__
        if error != entry.error:  # once per distinct problem, not on every snapshot
            kept = "keeping the last good key set" if entry.text is not None else "its tokens are rejected"
            log.warning("jwks %s: %s; %s", source, error, kept)
        entry.ok, entry.error, entry.checked_at = False, error, self.clock()

    def status(self) -> dict[str, dict[str, Any]]:
        """Per source: loaded or not, the last error (for debug pages)."""
        return {s: {"loaded": e.text is not None, "error": e.error} for s, e in sorted(self._entries.items())}


def _jwks_uri(discovery: str) -> str:
    try:
        uri = json.loads(discovery).get("jwks_uri")
    except (ValueError, AttributeError):
        uri = None
    if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
        raise JwksError("OpenID discovery document without an http(s) jwks_uri")
    return uri
