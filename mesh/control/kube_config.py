"""The config seam, Kubernetes implementation: Istio custom resources from a watch on the 7 CRDs.

One `kube_watch.Watcher` per kind, across namespaces. Every object goes through `mesh.api.load_document`
and `refuse_unsupported` (the one validator), cached by uid + resourceVersion so an event re-validates
only what changed. A bad object is rejected and reported (log, `ConfigStore.rejected`, /debug/kubernetes):
a new one stays out; an update that breaks a good object leaves its last good version running
(DESIGN.md principle 2). The valid set goes to `ConfigStore.sync`, so snapshot → push runs unchanged.
Next: `mesh.control.plane` takes snapshots from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mesh.api as api
from mesh.control import config_store, kube, kube_watch, registry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str
    group: str
    version: str
    plural: str

    @property
    def path(self) -> str:
        return f"/apis/{self.group}/{self.version}/{self.plural}"


KINDS = (
    Kind("VirtualService", "networking.istio.io", "v1", "virtualservices"),
    Kind("DestinationRule", "networking.istio.io", "v1", "destinationrules"),
    Kind("Gateway", "networking.istio.io", "v1", "gateways"),
    Kind("ServiceEntry", "networking.istio.io", "v1", "serviceentries"),
    Kind("PeerAuthentication", "security.istio.io", "v1", "peerauthentications"),
    Kind("AuthorizationPolicy", "security.istio.io", "v1", "authorizationpolicies"),
    Kind("RequestAuthentication", "security.istio.io", "v1", "requestauthentications"),
)


@dataclass(frozen=True, slots=True)
class _Parsed:
    stamp: tuple[str, str]  # (uid, resourceVersion): unchanged object, no re-validation
    resource: Any  # the api resource, or None when rejected
    error: str = ""


class KubernetesConfig:
    """Watches the CRDs and keeps `store` equal to the valid custom resources in the cluster."""

    def __init__(self, api_server: kube.Api, store: config_store.ConfigStore, kinds: tuple[Kind, ...] = KINDS,
                 watcher: Callable[..., kube_watch.Watcher] = kube_watch.Watcher) -> None:
        self.store = store
        self.kinds = kinds
        self._parsed: dict[str, dict[str, _Parsed]] = {k.kind: {} for k in kinds}  # kind → object key → parsed
        self._good: dict[str, Any] = {}  # resource key → last good resource
        self.watchers = {k.kind: watcher(api_server, k.path, self._on_change(k), missing_ok=True) for k in kinds}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def loaded(self) -> bool:
        return all(w.stats.synced for w in self.watchers.values())

    async def start(self) -> None:
        """Start every watch and return once each kind was listed once (the first snapshot needs them all)."""
        self._tasks = [asyncio.create_task(w.run(), name=f"watch-{kind}") for kind, w in self.watchers.items()]
        await asyncio.gather(*(w.synced.wait() for w in self.watchers.values()))
        log.info("config: %d resources from the cluster, %d rejected", len(self._good), len(self.store.rejected))

    async def stop(self) -> None:
        for task in self._tasks:
            await registry.cancel(task)
        self._tasks = []

    def dump(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "watches": {k: w.stats.to_dict() for k, w in self.watchers.items()},
                "rejected": dict(self.store.rejected)}

    def _on_change(self, kind: Kind) -> Callable[[kube_watch.Objects], None]:
        return lambda objects: self.update(kind.kind, objects)

    def update(self, kind: str, objects: kube_watch.Objects) -> None:
        """The whole current set of one kind: re-validate what changed, then sync the store."""
        old, new = self._parsed[kind], {}
        for key, obj in objects.items():
            meta = obj.get("metadata") or {}
            stamp = (str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""))
            cached = old.get(key)
            new[key] = cached if cached is not None and cached.stamp == stamp and stamp[1] else self._parse(obj, stamp)
        self._parsed[kind] = new
        self._publish()

    def _parse(self, obj: dict[str, Any], stamp: tuple[str, str]) -> _Parsed:
        meta = obj.get("metadata") or {}
        source = f"kubernetes:{obj.get('kind')}/{meta.get('namespace')}/{meta.get('name')}@{stamp[1]}"
        try:
            resource = api.load_document(obj, source)
            api.refuse_unsupported(resource, file=source)
        except api.ConfigError as exc:
            return _Parsed(stamp, None, str(exc))
        return _Parsed(stamp, resource)

    def _publish(self) -> None:
        good: dict[str, Any] = {}
        rejected: dict[str, str] = {}
        for kind, parsed in self._parsed.items():
            for key, p in parsed.items():
                rkey = f"{kind}/{key}"
                if p.resource is not None:
                    good[rkey] = p.resource
                    continue
                rejected[rkey] = p.error
                if rkey in self._good:  # a broken update: the last good version keeps running
                    good[rkey] = self._good[rkey]
        for rkey in sorted(k for k in rejected if self.store.rejected.get(k) != rejected[k]):
            kept = " (its last good version keeps running)" if rkey in good else ""
            log.error("rejected %s%s: %s", rkey, kept, rejected[rkey])
        self._good = good
        self.store.sync(good, rejected)
