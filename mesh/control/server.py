"""The control plane's plain HTTP API for meshctl, on loopback only (docs/architecture.md): config
apply/delete/list, proxy status, readiness and Istio-style debug endpoints. Proxies never use it: their
discovery and CSRs go over the TLS mesh channel (`mesh.control.channel`). It only moves bytes: decisions
live in `mesh.control.discovery` and `mesh.control.config_store` (validation).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

import mesh.api as api
from mesh.control import config_store, plane
from mesh.view import wire

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024  # bytes: the largest config apply accepted

PLANE = web.AppKey("plane", plane.ControlPlane)

DEBUG_ENDPOINTS = {
    "/debug/list": "this list",
    "/debug/syncz": "per proxy: current, sent and ACKed version, last nonce, last NACK (Istio's syncz)",
    "/debug/config_dump?proxy=ID": "the view built for one connected proxy, as sent on the wire",
    "/debug/registry": "the service registry: services and workloads as the control plane sees them",
    "/debug/push_status": "debounce and push counters, current snapshot revision and its registry generation",
    "/debug/config": "resource keys in the current snapshot",
    "/debug/ca": "the mesh CA: signing certificate, root fingerprint, workload TTL, certificates issued/refused",
}


def make_app(control: plane.ControlPlane) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[PLANE] = control
    app.router.add_post("/v1/config", apply_config)
    app.router.add_delete("/v1/config", delete_config)
    app.router.add_get("/v1/config", get_config)
    app.router.add_get("/v1/proxies", proxies)
    app.router.add_get("/v1/traces", get_traces)
    app.router.add_get("/ready", ready)
    app.router.add_get("/debug/list", debug_list)
    app.router.add_get("/debug/syncz", syncz)
    app.router.add_get("/debug/config_dump", config_dump)
    app.router.add_get("/debug/registry", debug_registry)
    app.router.add_get("/debug/push_status", push_status)
    app.router.add_get("/debug/config", debug_config)
    app.router.add_get("/debug/ca", debug_ca)
    return app


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"invalid JSON body: {exc}"}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "expected a JSON object"}),
                                 content_type="application/json")
    return body


# -- config --------------------------------------------------------------------------------------------


def _files(body: dict[str, Any]) -> list[tuple[str, str]]:
    files = body.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("text"), str) for f in files):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": 'expected "files": [{"name": "a.yaml", "text": "..."}]'}),
            content_type="application/json",
        )
    return [(str(f.get("name") or f"file{i}.yaml"), f["text"]) for i, f in enumerate(files)]


def _configerror(exc: api.ConfigError) -> web.Response:
    return error(400, str(exc), file=exc.file, resource=exc.resource, path=exc.path)


async def apply_config(request: web.Request) -> web.Response:
    store = request.app[PLANE].store
    body = await read_json(request)
    files = _files(body)
    dry_run = bool(body.get("dryRun"))
    label = body.get("label")
    if label is not None and not isinstance(label, dict):
        return error(400, "label must be a JSON object")
    try:
        result = store.apply(files, dry_run=dry_run, default_namespace=body.get("namespace") or None,
                             replace=bool(body.get("replace")), label=label)
    except api.ConfigError as exc:
        return _configerror(exc)
    except config_store.StoreError as exc:
        return error(500, str(exc))
    return web.json_response(
        {
            "applied": result.keys,
            "changes": [{"key": c.key, "action": c.action} for c in result.changes],
            "warnings": list(result.warnings),
            "dryRun": dry_run,
            "label": store.label,
        }
    )


async def delete_config(request: web.Request) -> web.Response:
    store = request.app[PLANE].store
    body = await read_json(request)
    dry_run = bool(body.get("dryRun"))
    try:
        if "keys" in body and "files" not in body:
            result = store.delete_keys([str(k) for k in body.get("keys") or ()], dry_run=dry_run)
        else:
            result = store.delete(_files(body), dry_run=dry_run, default_namespace=body.get("namespace") or None)
    except api.ConfigError as exc:
        return _configerror(exc)
    except config_store.StoreError as exc:
        return error(500, str(exc))
    return web.json_response({"deleted": list(result.deleted), "notFound": list(result.not_found), "dryRun": dry_run})


async def get_config(request: web.Request) -> web.Response:
    store = request.app[PLANE].store
    q = request.query
    selected = store.select(q.get("kind") or None, q.get("namespace") or None, q.get("name") or None)
    return web.json_response({"resources": [api.dump(r) for r in selected], "label": store.label})


# -- status --------------------------------------------------------------------------------------------


async def get_traces(request: web.Request) -> web.Response:
    """`?request_id=R` or `?trace_id=T`: that trace's spans, in start order; neither: the recent traces."""
    store = request.app[PLANE].traces
    trace_id = request.query.get("trace_id") or None
    request_id = request.query.get("request_id") or None
    if request_id is not None:
        trace_id = store.trace_of_request(request_id)
        if trace_id is None:
            return error(404, f"no trace recorded for request id {request_id} (sampled out, or older than the "
                              f"last {store.max_traces} traces)")
    if trace_id is None:
        return web.json_response({"traces": store.recent()})
    spans = store.trace(trace_id)
    if not spans:
        return error(404, f"no trace {trace_id}")
    return web.json_response({"traceId": trace_id, "spans": spans})


async def proxies(request: web.Request) -> web.Response:
    disco = request.app[PLANE].discovery
    disco.forget_stale()  # proxies gone for FORGET_AFTER leave the table when someone looks at it
    return web.json_response({"proxies": disco.rows()})


async def ready(request: web.Request) -> web.Response:
    control = request.app[PLANE]
    if control.ready:
        return web.json_response({"ready": True, "revision": control.snapshot.revision})
    return web.json_response({"ready": False}, status=503)


async def debug_list(request: web.Request) -> web.Response:
    return web.json_response({"endpoints": [{"path": p, "description": d} for p, d in DEBUG_ENDPOINTS.items()]})


async def syncz(request: web.Request) -> web.Response:
    disco = request.app[PLANE].discovery
    disco.forget_stale()
    rows = []
    for row in disco.rows():
        state = disco.proxies[row["proxy"]]
        rows.append({**row, "nonce": state.sent_nonce, "snapshotRevision": state.revision})
    return web.json_response({"revision": disco.snapshot.revision, "proxies": rows})


async def config_dump(request: web.Request) -> web.Response:
    disco = request.app[PLANE].discovery
    proxy_id = request.query.get("proxy")
    if not proxy_id:
        return error(400, "query parameter proxy=ID is required", proxies=sorted(disco.proxies))
    state = disco.proxies.get(proxy_id)
    if state is None or state.view is None:
        return error(404, f"proxy {proxy_id!r} is not connected", proxies=sorted(disco.proxies))
    return web.json_response(
        {"proxy": proxy_id, "node": state.node.to_dict(), "version": state.version, "view": wire.to_dict(state.view)}
    )


async def debug_registry(request: web.Request) -> web.Response:
    source = request.app[PLANE].registry
    return web.json_response({"loaded": source.loaded, **source.current().to_dict()})


async def push_status(request: web.Request) -> web.Response:
    control = request.app[PLANE]
    pusher = control.pusher
    return web.json_response(
        {
            "revision": control.snapshot.revision,
            # what the current snapshot was built from: a registry writer waits for its own generation here
            "registryGeneration": control.snapshot.registry.generation,
            "pending": pusher.debouncer.pending,
            "queued": len(pusher.queue),
            **pusher.stats.to_dict(),
        }
    )


async def debug_config(request: web.Request) -> web.Response:
    snap = request.app[PLANE].snapshot
    return web.json_response({"revision": snap.revision, "resources": [r.key for r in snap.resources]})


async def debug_ca(request: web.Request) -> web.Response:
    certs = request.app[PLANE].certificates
    if certs is None:
        return error(404, "this control plane runs without a CA")
    return web.json_response(certs.dump())
