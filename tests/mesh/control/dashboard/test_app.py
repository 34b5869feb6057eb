"""The dashboard's web app with aiohttp's test client, against fake proxies' admin APIs on loopback:
the page and its assets, /api/graph from real scrapes, /api/node with and without an access log."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mesh.control import node, registry, snapshot
from mesh.control.dashboard import app as dashboard_app
from mesh.control.dashboard import scrape
from tests.mesh.control.conftest import BOOKINFO
from tests.mesh.control.dashboard.promtext import Row, render


class FakeDiscovery:
    def __init__(self, nodes: list[node.Node]) -> None:
        self.proxies = {n.id: SimpleNamespace(node=n) for n in nodes}

    def connected(self) -> list[str]:
        return sorted(self.proxies)


def admin_app(rows: list[list[Row]], access_log: list | None) -> web.Application:
    """A proxy admin API whose counters move on at each scrape, then stay at the last row set."""
    pending = list(rows) or [[]]

    async def stats(request: web.Request) -> web.Response:
        text = render(pending[0])
        if len(pending) > 1:
            pending.pop(0)
        return web.Response(text=text)

    async def log(request: web.Request) -> web.Response:
        assert request.query["limit"] == str(dashboard_app.ACCESS_LOG_LIMIT)
        return web.json_response(access_log)

    app = web.Application()
    app.router.add_get("/stats/prometheus", stats)
    if access_log is not None:
        app.router.add_get("/access_log", log)
    return app


async def scenario(check) -> None:
    books = TestServer(admin_app([[Row("source", "books-v1", "ratings-v2", 10)],
                                  [Row("source", "books-v1", "ratings-v2", 40)]], access_log=[{"path": "/r"}]))
    ratings = TestServer(admin_app([], access_log=None))
    await books.start_server()
    await ratings.start_server()
    nodes = [
        node.make_node("books-v1.bookinfo", "sidecar", "bookinfo", "books-v1", {"app": "books", "version": "v1"},
                       ports={"admin": books.port}),
        node.make_node("ratings-v2.bookinfo", "sidecar", "bookinfo", "ratings-v2",
                       {"app": "ratings", "version": "v2"}, ports={"admin": ratings.port}),
        node.make_node("istio-ingressgateway.weir-system", "gateway", "weir-system", "istio-ingressgateway",
                       ports={"admin": ratings.port}),
    ]
    snap = snapshot.build_snapshot([], registry.parse_registry(BOOKINFO))
    control = SimpleNamespace(discovery=FakeDiscovery(nodes), snapshot=snap, store=SimpleNamespace(label=None))
    board = dashboard_app.Dashboard(control)
    client = TestClient(TestServer(dashboard_app.make_app(board)))
    await client.start_server()
    try:
        await check(client, board)
    finally:
        await client.close()
        await books.close()
        await ratings.close()


def run(check) -> None:
    asyncio.run(scenario(check))


def test_page_and_vendored_assets_are_served_without_network() -> None:
    async def check(client: TestClient, board) -> None:
        page = await client.get("/")
        html = await page.text()
        assert page.status == 200 and "/static/app.js" in html and "/static/cytoscape.min.js" in html
        assert "http" not in html.replace("http-equiv", "")  # nothing loaded from elsewhere
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        for asset in ("app.js", "app.css", "cytoscape.min.js", "LICENSE.cytoscape"):
            response = await client.get(f"/static/{asset}")
            assert response.status == 200, asset

    run(check)


def test_graph_from_two_scrapes_and_the_node_panel() -> None:
    async def check(client: TestClient, board: dashboard_app.Dashboard) -> None:
        assert sorted(t.proxy_id for t in board.targets()) == [
            "books-v1.bookinfo", "istio-ingressgateway.weir-system", "ratings-v2.bookinfo"]
        await board.scraper.scrape_once()
        await asyncio.sleep(0.05)
        await board.scraper.scrape_once()
        response = await client.get("/api/graph")
        graph = await response.json()
        assert response.headers["Cache-Control"] == "no-store"
        ids = {n["id"] for n in graph["nodes"]}
        assert ids == {"ui-v1", "gw-v1", "books-v1", "books-v2", "ratings-v1", "ratings-v2", "istio-ingressgateway"}
        [edge] = graph["edges"]
        assert edge["id"] == "books-v1>ratings-v2" and edge["rps"] > 0 and edge["share"] == 1.0
        assert graph["proxies"] == 3 and graph["config"]["revision"] == 0

        panel = await (await client.get("/api/node/books-v1")).json()
        assert panel["requests"] == [{"path": "/r"}] and panel["outbound"][0]["target"] == "ratings-v2"
        panel = await (await client.get("/api/node/ratings-v2")).json()
        assert panel["requests"] is None and panel["requestsNote"] == "no access log"
        missing = await client.get("/api/node/nope")
        assert missing.status == 404 and "nope" in json.dumps(await missing.json())

    run(check)


def test_a_proxy_that_does_not_answer_costs_one_timeout_and_keeps_the_rest() -> None:
    async def never(url: str) -> str:
        await asyncio.sleep(10)
        return ""

    async def go() -> None:
        targets = [scrape.Target(f"p{i}", "x") for i in range(3)]
        scraper = scrape.Scraper(lambda: targets, never)
        scrape.SCRAPE_TIMEOUT, saved = 0.05, scrape.SCRAPE_TIMEOUT
        try:
            await asyncio.wait_for(scraper.scrape_once(), 1.0)
        finally:
            scrape.SCRAPE_TIMEOUT = saved
        assert scraper.failures == 3 and scraper.history == {}

    asyncio.run(go())


def test_in_a_cluster_stats_are_scraped_on_the_pods_health_port_locally_on_the_admin_port() -> None:
    nodes = [
        node.make_node("books-v1-5f7c9.bookinfo", "sidecar", "bookinfo", "books-v1",
                       ports={"admin": 15000, "health": 15021}, address="10.20.1.7"),
        node.make_node("ratings-v1.bookinfo", "sidecar", "bookinfo", "ratings-v1", ports={"admin": 21033}),
        node.make_node("gw-v1.bookinfo", "sidecar", "bookinfo", "gw-v1", ports={"admin": 15000, "health": 15021},
                       address="fd00::7"),
    ]
    control = SimpleNamespace(discovery=FakeDiscovery(nodes), snapshot=None, store=SimpleNamespace(label=None))
    board = dashboard_app.Dashboard(control)
    assert sorted(board.targets()) == [
        ("books-v1-5f7c9.bookinfo", "http://10.20.1.7:15021/stats/prometheus"),
        ("gw-v1.bookinfo", "http://[fd00::7]:15021/stats/prometheus"),
        ("ratings-v1.bookinfo", "http://127.0.0.1:21033/stats/prometheus"),
    ]
