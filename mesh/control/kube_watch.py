"""List + watch of one Kubernetes collection: the informer loop every Kubernetes source shares.

`Watcher` keeps the current objects of a collection (by `namespace/name`) in step with the API server,
client-go's reflector in small: list (paged), then watch from the list's resourceVersion with bookmarks;
a stream the server ends is reopened from the last resourceVersion seen; `410 Gone` (the version left the
watch cache) means a full relist; any other failure means a relist after a doubling, jittered backoff.
After every list and every event, `on_change(objects)` gets the whole current set (an immutable view):
the users (`kube_config`, `kube_registry`, `root_publisher`) derive their state from it, never from events,
so a missed DELETE cannot leave a ghost behind a relist.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from mesh.control import kube

log = logging.getLogger(__name__)

PAGE_SIZE = 500  # objects per list page: bounds one list answer
WATCH_TIMEOUT_S = 300  # server-side timeoutSeconds of one watch; the stream is then reopened from its version
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
QUICK_END_S = 1.0  # a watch ending this fast without events is reopened after BACKOFF_INITIAL_S
BACKOFF_JITTER = 0.2  # ±20 %, so replicas and collections do not relist in step

Objects = Mapping[str, dict[str, Any]]


def object_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


class Gone(Exception):
    """The resourceVersion we watch from is too old (410): relist."""


@dataclass(slots=True)
class WatchStats:
    """What /debug/kubernetes shows per collection."""

    synced: bool = False
    objects: int = 0
    resource_version: str = ""
    lists: int = 0
    watches: int = 0
    events: int = 0
    gone: int = 0
    errors: int = 0
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"synced": self.synced, "objects": self.objects, "resourceVersion": self.resource_version,
                "lists": self.lists, "watches": self.watches, "events": self.events, "gone": self.gone,
                "errors": self.errors, "lastError": self.last_error}


class Watcher:
    """One collection path (`/api/v1/pods`, `/apis/networking.istio.io/v1/virtualservices`, ...)."""

    def __init__(self, api: kube.Api, path: str, on_change: Callable[[Objects], None], *,
                 params: Mapping[str, str] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None, watch_timeout: int = WATCH_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic, missing_ok: bool = False) -> None:
        self.api = api
        self.path = path
        self.on_change = on_change
        self.params = dict(params or {})
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.watch_timeout = watch_timeout
        self.clock = clock
        self.missing_ok = missing_ok  # a 404 (CRD not installed) is an empty collection, retried with backoff
        self.stats = WatchStats()
        self._objects: dict[str, dict[str, Any]] = {}
        self._version = ""
        self._failures = 0
        self.synced = asyncio.Event()

    def __repr__(self) -> str:
        s = self.stats
        return (f"Watcher({self.path} synced={s.synced} objects={s.objects} rv={s.resource_version} "
                f"lists={s.lists} gone={s.gone} errors={s.errors})")

    def objects(self) -> Objects:
        return MappingProxyType(self._objects)

    async def run(self) -> None:
        """List and watch until cancelled; never raises otherwise."""
        while True:
            try:
                await self._list()
                self._failures = 0
                while True:  # reopen the watch from the last version each time the server ends it
                    started, events = self.clock(), self.stats.events
                    await self._watch()
                    if self.stats.events == events and self.clock() - started < QUICK_END_S:
                        await self.sleep(BACKOFF_INITIAL_S)  # a server closing at once must not spin us
            except Gone:
                self.stats.gone += 1
                log.info("watch %s: resourceVersion %s expired (410 Gone), relisting", self.path, self._version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: back off, relist; the watcher never dies
                self._failures += 1
                self.stats.errors += 1
                self.stats.last_error = str(exc) or type(exc).__name__
                delay = self.backoff(self._failures)
                log.warning("watch %s failed (%s): relisting in %.1fs", self.path, self.stats.last_error, delay)
                await self.sleep(delay)

    def backoff(self, failures: int) -> float:
        base = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** (failures - 1))
        return base * (1 + self.rng.uniform(-BACKOFF_JITTER, BACKOFF_JITTER))

    async def _list(self) -> None:
        objects: dict[str, dict[str, Any]] = {}
        token = ""
        while True:
            query = {**self.params, "limit": str(PAGE_SIZE), **({"continue": token} if token else {})}
            status, doc = await self.api("GET", f"{self.path}?{urlencode(query)}", None)
            if status == 410:  # the continue token expired mid-list
                raise Gone()
            if status == 404 and self.missing_ok:
                self._objects, self._version = {}, ""
                self._synced()
                raise kube.KubeError(f"list {self.path}: not found (is its CRD installed?)")
            if status != 200:
                raise kube.KubeError(f"list {self.path}: {kube.status_message(status, doc)}")
            for item in doc.get("items") or ():
                if isinstance(item, dict):
                    objects[object_key(item)] = item
            meta = doc.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                break
        self._objects = objects
        self._version = str(meta.get("resourceVersion") or "")
        self.stats.lists += 1
        self._synced()

    def _synced(self) -> None:
        first = not self.stats.synced
        self.stats.synced = True  # before the callback: a consumer waiting for all its lists sees this one
        self._changed()
        if first:
            self.synced.set()

    async def _watch(self) -> None:
        query = {**self.params, "watch": "1", "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(self.watch_timeout), "resourceVersion": self._version}
        self.stats.watches += 1
        try:
            async for event in self.api.stream(f"{self.path}?{urlencode(query)}", self.watch_timeout):
                self._apply(event)
        except kube.StreamError as exc:
            if exc.status == 410:
                raise Gone() from None
            raise

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event["object"]
        if kind == "ERROR":  # a Status inside the stream; 410 is the usual one
            if obj.get("code") == 410:
                raise Gone()
            raise kube.KubeError(f"watch {self.path}: {kube.status_message(int(obj.get('code') or 500), obj)}")
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            self._version = version or self._version
            self.stats.resource_version = self._version
            return
        key = object_key(obj)
        if kind in ("ADDED", "MODIFIED"):
            self._objects[key] = obj
        elif kind == "DELETED":
            self._objects.pop(key, None)
        else:
            log.warning("watch %s: unknown event type %r ignored", self.path, kind)
            return
        self._version = version or self._version
        self.stats.events += 1
        self._changed()

    def _changed(self) -> None:
        self.stats.objects = len(self._objects)
        self.stats.resource_version = self._version
        try:
            self.on_change(self.objects())
        except Exception:  # a consumer's bug must not stop the watch
            log.exception("watch %s: change handler failed", self.path)
