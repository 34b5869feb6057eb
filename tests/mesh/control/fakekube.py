"""A small fake Kubernetes API server (aiohttp, real HTTP on loopback) for the watch-based sources.

Collections are kept by path (`/api/v1/pods`, `/apis/networking.istio.io/v1/virtualservices`, ...) with
objects by `namespace/name` and one global resourceVersion counter, like etcd. It serves paged-free lists,
chunked watch streams (`watch=1`, one JSON event a line), GET/POST/PUT of namespaced items, a label
selector of the `k=v` form, and the failure modes the watcher must survive: a `410 Gone` ERROR event
mid-watch (`expire`), a stream the server ends (`end_streams`), and changes the watch never sees
(`quietly`) so only a relist can find them.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from mesh.control import kube

# namespaced item paths → the collection path they are stored under
_ITEM_COLLECTIONS = {"configmaps": "/api/v1/configmaps"}


class FakeKube:
    def __init__(self) -> None:
        self.collections: dict[str, dict[str, dict[str, Any]]] = {}
        self.version = 100
        self.watches: dict[str, list[tuple[asyncio.Queue, str]]] = {}
        self.compacted: dict[str, int] = {}  # path → watches from an older version get 410
        self.requests: list[tuple[str, str]] = []
        self.failing: dict[str, int] = {}  # path → how many more lists answer 500
        self.refusals: dict[str, list[int]] = {}  # method → statuses the next writes of it get (e.g. 403)
        self.server: TestServer | None = None
        self.api: kube.ApiServer | None = None

    # -- lifecycle --------------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeKube:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.server = TestServer(app)
        await self.server.start_server()
        self.api = kube.ApiServer.at(str(self.server.make_url("")), "test-token")  # a kubernetes_asyncio client
        return self

    async def __aexit__(self, *exc: object) -> None:
        for queues in self.watches.values():
            for queue, _ in queues:
                queue.put_nowait(None)
        await self.api.close()
        await self.server.close()

    # -- the cluster's state ---------------------------------------------------------------------------

    def put(self, path: str, obj: dict[str, Any], *, quietly: bool = False) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        key = f"{meta.get('namespace')}/{meta['name']}" if meta.get("namespace") else meta["name"]
        objects = self.collections.setdefault(path, {})
        kind = "MODIFIED" if key in objects else "ADDED"
        meta.setdefault("uid", f"uid-{key}")
        meta["resourceVersion"] = self._bump()
        objects[key] = obj
        if not quietly:
            self._send(path, {"type": kind, "object": obj})
        return obj

    def delete(self, path: str, key: str, *, quietly: bool = False) -> None:
        obj = self.collections[path].pop(key)
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": self._bump()}}
        if not quietly:
            self._send(path, {"type": "DELETED", "object": obj})

    def bookmark(self, path: str) -> None:
        self._send(path, {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": self._bump()}}})

    def expire(self, path: str) -> None:
        """etcd compacted: open watches get an ERROR 410 event, new ones from an old version too."""
        self.compacted[path] = self.version
        self._send(path, {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                     "code": 410, "reason": "Expired",
                                                     "message": "too old resource version"}})
        self.end_streams(path)

    def end_streams(self, path: str) -> None:
        for queue, _ in self.watches.pop(path, []):
            queue.put_nowait(None)

    def watching(self, path: str) -> int:
        return len(self.watches.get(path, ()))

    def lists(self, path: str) -> int:
        return sum(1 for m, p in self.requests if m == "GET" and p.startswith(path + "?") and "watch=1" not in p)

    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    def _send(self, path: str, event: dict[str, Any]) -> None:
        for queue, selector in self.watches.get(path, ()):
            if event["type"] in ("BOOKMARK", "ERROR") or _selected(event["object"], selector):
                queue.put_nowait(event)

    # -- HTTP --------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        path, query = request.path, request.query
        if request.method == "GET" and query.get("watch") == "1":
            return await self._watch(request, path, query)
        item = _item_of(path)
        if item is None:
            if request.method != "GET":
                return _status(405, "method not allowed")
            if self.failing.get(path):
                self.failing[path] -= 1
                return _status(500, "etcdserver: request timed out")
            items = [o for o in self.collections.get(path, {}).values() if _selected(o, query.get("labelSelector", ""))]
            return web.json_response({"kind": "List", "apiVersion": "v1", "items": items,
                                      "metadata": {"resourceVersion": str(self.version)}})
        collection, key = item
        objects = self.collections.setdefault(collection, {})
        if request.method == "GET":
            return web.json_response(objects[key]) if key in objects else _status(404, f"{key} not found")
        if self.refusals.get(request.method):
            return _status(self.refusals[request.method].pop(0), f"{request.method} {path} refused")
        body = await request.json()
        if request.method == "POST":
            name = body["metadata"]["name"]
            key = f"{key}/{name}"
            if key in objects:
                return _status(409, f"{key} already exists")
            return web.json_response(self.put(collection, body), status=201)
        if request.method == "PUT":
            current = objects.get(key)
            if current is None:
                return _status(404, f"{key} not found")
            if body["metadata"].get("resourceVersion") not in (None, current["metadata"]["resourceVersion"]):
                return _status(409, "the object has been modified")
            return web.json_response(self.put(collection, body))
        return _status(405, "method not allowed")

    async def _watch(self, request: web.Request, path: str, query) -> web.StreamResponse:
        since = int(query.get("resourceVersion") or 0)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if since and since < self.compacted.get(path, 0):
            await _write(response, {"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                                "message": "too old resource version"}})
            return response
        queue: asyncio.Queue = asyncio.Queue()
        self.watches.setdefault(path, []).append((queue, query.get("labelSelector", "")))
        try:
            while (event := await queue.get()) is not None:
                await _write(response, event)
        finally:
            entries = self.watches.get(path, [])
            self.watches[path] = [e for e in entries if e[0] is not queue]
        return response


def _item_of(path: str) -> tuple[str, str] | None:
    """`/api/v1/namespaces/NS/configmaps[/NAME]` → (`/api/v1/configmaps`, `NS[/NAME]`)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] in _ITEM_COLLECTIONS:
        return _ITEM_COLLECTIONS[parts[4]], "/".join([parts[3], *parts[5:6]])
    return None


def _selected(obj: dict[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, _, v in (s.partition("=") for s in selector.split(",") if s))


def _status(code: int, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                              "message": message}, status=code)


async def _write(response: web.StreamResponse, event: dict[str, Any]) -> None:
    await response.write(json.dumps(event).encode() + b"\n")


async def until(condition, what: str = "condition", timeout: float = 5.0) -> None:
    """Wait for `condition()` with tiny awaits (the loopback HTTP round trips need a few ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class FakeSleep:
    """An injected `sleep`: records the delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)
