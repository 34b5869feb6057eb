"""Publishes the mesh root certificate where sidecars can mount it (Istio's `istio-ca-root-cert`).

The ConfigMap `weir-ca-root-cert` (key `root-cert.pem`) is kept in the control plane's namespace and in
every namespace labelled `weir-injection=enabled`, which a `kube_watch.Watcher` on namespaces follows.
A change of the namespace set wakes one reconcile loop: create (POST) when missing, replace (PUT with
the read resourceVersion) when the certificate differs, nothing when equal; a failed namespace is retried
after a doubling backoff. `mesh.manifests.injection` mounts the ConfigMap into every injected pod.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from mesh.control import kube, kube_watch, registry

log = logging.getLogger(__name__)

CONFIGMAP_NAME = "weir-ca-root-cert"
ROOT_CERT_KEY = "root-cert.pem"
INJECTION_LABEL = "weir-injection"
INJECTION_ENABLED = "enabled"
NAMESPACES = "/api/v1/namespaces"
LABELS = {"app.kubernetes.io/managed-by": "weir", "app.kubernetes.io/part-of": "weir"}


class RootPublisher:
    def __init__(self, api_server: kube.Api, root_pem: bytes | str, control_namespace: str, *,
                 watcher: Callable[..., kube_watch.Watcher] = kube_watch.Watcher,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        self.api = api_server
        self.root_pem = root_pem.decode() if isinstance(root_pem, bytes) else root_pem
        self.control_namespace = control_namespace
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.watcher = watcher(api_server, NAMESPACES, self._on_change,
                               params={"labelSelector": f"{INJECTION_LABEL}={INJECTION_ENABLED}"})
        self.wanted: set[str] = {control_namespace}
        self.published: dict[str, str] = {}  # namespace → the root it holds (as we last wrote or read it)
        self.failures: dict[str, str] = {}  # namespace → last error
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"RootPublisher(wanted={sorted(self.wanted)} published={sorted(self.published)} failing={sorted(self.failures)})"

    async def start(self) -> None:
        self._dirty.set()
        self._tasks = [asyncio.create_task(self.watcher.run(), name="watch-namespaces"),
                       asyncio.create_task(self._run(), name="root-publisher")]

    async def stop(self) -> None:
        for task in self._tasks:
            await registry.cancel(task)
        self._tasks = []

    def set_root(self, root_pem: bytes | str) -> None:
        """A new root (CA rotation): every namespace is brought up to date."""
        self.root_pem = root_pem.decode() if isinstance(root_pem, bytes) else root_pem
        self._dirty.set()

    def dump(self) -> dict[str, Any]:
        return {"configMap": CONFIGMAP_NAME, "namespaces": sorted(self.wanted),
                "published": sorted(ns for ns, pem in self.published.items() if pem == self.root_pem),
                "failures": dict(self.failures), "watch": self.watcher.stats.to_dict()}

    def _on_change(self, namespaces: kube_watch.Objects) -> None:
        wanted = {self.control_namespace, *namespaces}
        if wanted != self.wanted:
            self.wanted = wanted
            self._dirty.set()

    async def _run(self) -> None:
        attempt = 0
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if await self.reconcile():
                attempt = 0
                continue
            attempt += 1  # some namespace failed: try again after a backoff, or sooner on a change
            delay = min(kube_watch.BACKOFF_MAX_S, kube_watch.BACKOFF_INITIAL_S * 2 ** (attempt - 1))
            await self.sleep(delay * (1 + self.rng.uniform(-kube_watch.BACKOFF_JITTER, kube_watch.BACKOFF_JITTER)))
            self._dirty.set()

    async def reconcile(self) -> bool:
        """Bring every wanted namespace up to date; True when all are."""
        ok = True
        for namespace in sorted(self.wanted):
            if self.published.get(namespace) == self.root_pem:
                continue
            try:
                await self.publish(namespace)
                self.failures.pop(namespace, None)
            except kube.KubeError as exc:
                ok = False
                self.failures[namespace] = str(exc)
                log.warning("cannot publish %s in %s: %s", CONFIGMAP_NAME, namespace, exc)
        for namespace in set(self.published) - self.wanted:
            del self.published[namespace]  # unlabelled: left in place (pods may mount it), no longer ours to keep
        return ok

    async def publish(self, namespace: str) -> None:
        collection = f"/api/v1/namespaces/{quote(namespace)}/configmaps"
        path = f"{collection}/{CONFIGMAP_NAME}"
        status, doc = await self.api("GET", path, None)
        if status == 404:
            status, doc = await self.api("POST", collection, self.configmap(namespace))
            if status == 409:  # another replica created it: read again next round
                raise kube.KubeError(f"{path}: created concurrently, re-reading")
            action = "created"
        elif status == 200:
            if (doc.get("data") or {}).get(ROOT_CERT_KEY) == self.root_pem:
                self.published[namespace] = self.root_pem
                return
            body = self.configmap(namespace, (doc.get("metadata") or {}).get("resourceVersion"))
            status, doc = await self.api("PUT", path, body)
            action = "updated"
        if status not in (200, 201):
            raise kube.KubeError(f"{path}: {kube.status_message(status, doc)}")
        self.published[namespace] = self.root_pem
        log.info("%s %s/%s", action, namespace, CONFIGMAP_NAME)

    def configmap(self, namespace: str, resource_version: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": CONFIGMAP_NAME, "namespace": namespace, "labels": dict(LABELS)}
        if resource_version:
            meta["resourceVersion"] = resource_version  # optimistic concurrency: a 409 means re-read
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {ROOT_CERT_KEY: self.root_pem}}
