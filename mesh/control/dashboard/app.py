"""The dashboard's web app (Kiali's role): the page, its static assets and a small JSON API, on its own
loopback port in the control plane process (`--dashboard-port`, 20001 locally; 0: off).

    GET /                     the page (static/index.html: static/app.js draws with the vendored Cytoscape)
    GET /static/{file}        app.js, app.css, cytoscape.min.js (+ its LICENSE): no CDN, no network
    GET /api/graph            the service graph, badges on its nodes (mesh.control.dashboard.graph, badges)
    GET /api/node/{workload}  one node's side panel (mesh.control.dashboard.panel) with its access log

I/O only: the control plane's discovery says which proxies exist and where their admin API listens,
mesh.control.dashboard.scrape samples them, the pure modules decide the rest. Badges are computed once
per snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from mesh.control import node as node_mod
from mesh.control import plane
from mesh.control.dashboard import badges, graph, panel, scrape

log = logging.getLogger(__name__)

DEFAULT_PORT = 20001  # Kiali's port
STATIC = Path(__file__).parent / "static"
ADMIN_HOST = "127.0.0.1"  # locally every proxy's admin API is on loopback
ACCESS_LOG_LIMIT = 20  # requests shown in the side panel
ACCESS_LOG_TIMEOUT = 1.0  # seconds
MAX_ACCESS_LOG_BYTES = 1024 * 1024
SHUTDOWN_TIMEOUT = 1.0  # seconds: the page's requests are short; it polls again after a restart
# The page loads nothing from elsewhere; cytoscape sets element styles from script.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'")

DASHBOARD = web.AppKey("dashboard", "Dashboard")


class Dashboard:
    """What the page asks for, from the control plane's current state and the scraper's samples."""

    def __init__(self, control: plane.ControlPlane, session: aiohttp.ClientSession | None = None) -> None:
        self.control = control
        self.session = session
        self.scraper = scrape.Scraper(self.targets, self._fetch_text)
        self._effects: tuple[Any, dict[str, list[badges.Effect]]] = (None, {})

    def proxies(self) -> list[node_mod.Node]:
        discovery = self.control.discovery
        return [discovery.proxies[pid].node for pid in discovery.connected() if pid in discovery.proxies]

    def targets(self) -> list[scrape.Target]:
        """Each proxy's stats: in a cluster on its pod IP's health port (its admin API is on the pod's
        loopback), locally on its admin port."""
        out = []
        for n in self.proxies():
            if n.address and n.ports.get("health"):
                host = f"[{n.address}]" if ":" in n.address else n.address
                out.append(scrape.Target(n.id, f"http://{host}:{n.ports['health']}/stats/prometheus"))
            elif n.ports.get("admin"):
                out.append(scrape.Target(n.id, f"http://{ADMIN_HOST}:{n.ports['admin']}/stats/prometheus"))
        return out

    def workloads(self) -> list[graph.Workload]:
        found = {w.name: graph.Workload(w.name, w.namespace, w.labels.get("app", ""), w.labels.get("version", ""))
                 for w in self.control.snapshot.registry.workloads}
        for n in self.proxies():
            if n.role == node_mod.GATEWAY:
                found[n.workload] = graph.Workload(n.workload, n.namespace, role=graph.GATEWAY)
        return list(found.values())

    def effects(self) -> dict[str, list[badges.Effect]]:
        snap = self.control.snapshot
        if self._effects[0] is not snap:
            gateways = [n.workload for n in self.proxies() if n.role == node_mod.GATEWAY]
            self._effects = (snap, badges.effects(snap, gateways))
        return self._effects[1]

    def graph(self) -> dict:
        self.scraper.viewed()
        built = graph.build(self.workloads(), self.scraper.windows())
        found = self.effects()
        for node in built["nodes"]:
            node["badges"] = badges.badges(found.get(node["id"], ()))
        snap = self.control.snapshot
        label = self.control.store.label
        built["config"] = {"revision": snap.revision, "resources": len(snap.resources),
                           "label": dict(label) if label else None}
        built["proxies"] = len(self.scraper.history)
        return built

    async def node(self, workload: str) -> dict | None:
        requests, note = await self.access_log(workload)
        return panel.build(self.graph(), workload, self.effects().get(workload, ()), requests, note)

    async def access_log(self, workload: str) -> tuple[list[dict] | None, str]:
        """The workload's proxy's recent requests; (None, why) when it has none to give."""
        proxy = next((n for n in self.proxies() if n.workload == workload and n.ports.get("admin")), None)
        if proxy is None or self.session is None:
            return None, "no proxy connected"
        url = f"http://{ADMIN_HOST}:{proxy.ports['admin']}/access_log?limit={ACCESS_LOG_LIMIT}"
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=ACCESS_LOG_TIMEOUT)) as resp:
                if resp.status != 200:
                    return None, panel.NO_ACCESS_LOG
                entries = json.loads(await resp.content.read(MAX_ACCESS_LOG_BYTES))
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            return None, f"access log unavailable: {exc or type(exc).__name__}"
        if isinstance(entries, dict):  # tolerate {"entries": [...]}
            entries = entries.get("entries")
        if not isinstance(entries, list):
            return None, panel.NO_ACCESS_LOG
        return [e for e in entries if isinstance(e, dict)][-ACCESS_LOG_LIMIT:], ""

    async def _fetch_text(self, url: str) -> str:
        if self.session is None:
            raise OSError("no HTTP session")
        try:
            async with self.session.get(url) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                return (await resp.content.read(scrape.MAX_SCRAPE_BYTES)).decode("utf-8", "replace")
        except aiohttp.ClientError as exc:  # the scraper knows OSError, TimeoutError and ValueError
            raise OSError(str(exc)) from exc


def make_app(dashboard: Dashboard) -> web.Application:
    app = web.Application(middlewares=[_headers])
    app[DASHBOARD] = dashboard
    app.router.add_get("/", index)
    app.router.add_get("/api/graph", api_graph)
    app.router.add_get("/api/node/{workload}", api_node)
    app.router.add_static("/static", STATIC, append_version=False)
    app.cleanup_ctx.append(_background)
    return app


async def _background(app: web.Application):
    """The HTTP client and the scraper live as long as the app."""
    dashboard = app[DASHBOARD]
    owned = dashboard.session is None
    if owned:
        dashboard.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=scrape.MAX_CONCURRENT_SCRAPES), trust_env=False)
    task = asyncio.create_task(dashboard.scraper.run(), name="dashboard-scraper")
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    if owned:
        await dashboard.session.close()


@web.middleware
async def _headers(request: web.Request, handler):
    response = await handler(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def api_graph(request: web.Request) -> web.Response:
    return web.json_response(request.app[DASHBOARD].graph())


async def api_node(request: web.Request) -> web.Response:
    workload = request.match_info["workload"]
    found = await request.app[DASHBOARD].node(workload)
    if found is None:
        return web.json_response({"error": f"no workload {workload!r} in the graph"}, status=404)
    return web.json_response(found)


async def start(control: plane.ControlPlane, host: str, port: int) -> web.AppRunner | None:
    """Serve the dashboard on host:port; None when off (port 0) or the port is taken (the control plane
    runs on without its dashboard)."""
    if not port:
        return None
    runner = web.AppRunner(make_app(Dashboard(control)), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        log.warning("dashboard off: cannot listen on %s:%d: %s", host, port, exc)
        await runner.cleanup()
        return None
    log.info("dashboard on http://%s:%d/", host, port)
    return runner
