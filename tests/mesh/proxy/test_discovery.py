"""The discovery client against a scripted aiohttp control plane: apply, NACK, 304, backoff."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import test_utils, web

from mesh.proxy import discovery
from mesh.view import model, wire
from tests.mesh.proxy.fakes import bookinfo_view

NODE = {"id": "gw-v1.bookinfo", "role": "sidecar"}


REAL_SLEEP = asyncio.sleep


def record_sleeps(monkeypatch, stop_after: int = 0) -> list[float]:
    """Replace asyncio.sleep: backoff delays are recorded, not waited; sleep(0) (used by aiohttp) still yields."""
    delays: list[float] = []

    async def fake_sleep(delay, result=None):
        if delay == 0:
            return await REAL_SLEEP(0, result)
        delays.append(delay)
        if len(delays) == stop_after:
            raise Stop

    monkeypatch.setattr(discovery.asyncio, "sleep", fake_sleep)
    return delays


class Stop(Exception):
    pass


class ControlPlane:
    """Answers the n-th discovery request with the n-th scripted reply; the last reply long-polls forever."""

    def __init__(self, *replies: tuple[int, dict | None]) -> None:
        self.replies = list(replies)
        self.requests: list[dict] = []
        self.parked = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/discovery", self.discovery)
        self.server = test_utils.TestServer(app, host="127.0.0.1")

    async def discovery(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        if not self.replies:
            self.parked.set()
            await asyncio.Event().wait()
        code, body = self.replies.pop(0)
        if body is None:
            return web.Response(status=code)
        return web.json_response(body, status=code)


class Applied:
    def __init__(self, refuse: set[str] = frozenset()) -> None:
        self.views: list[tuple[model.ProxyView, str]] = []
        self.refuse = refuse

    async def __call__(self, view: model.ProxyView, version: str) -> None:
        if version in self.refuse:
            raise model.ViewError(f"cannot bind listener for {version}")
        self.views.append((view, version))


def response(version: str, nonce: str, view) -> tuple[int, dict]:
    return 200, {"version_info": version, "nonce": nonce, "view": view}


async def run_until_parked(plane: ControlPlane, applied: Applied) -> discovery.DiscoveryClient:
    await plane.server.start_server()
    client = discovery.DiscoveryClient("127.0.0.1", plane.server.port, NODE, applied)
    task = asyncio.get_running_loop().create_task(client.run())
    try:
        await asyncio.wait_for(plane.parked.wait(), 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await plane.server.close()
    return client


async def test_applies_a_view_nacks_a_bad_one_with_the_old_version_and_keeps_serving():
    good = bookinfo_view()
    bad = json.loads(wire.to_json(good))
    bad["route_tables"][0]["virtual_hosts"][0]["routes"][0]["clusters"][0]["cluster"] = "missing"
    plane = ControlPlane(response("v1", "n1", wire.to_dict(good)), response("v2", "n2", bad), (304, None))
    applied = Applied()
    client = await run_until_parked(plane, applied)

    assert applied.views == [(good, "v1")]
    first, ack, nack, after_304 = plane.requests
    assert first == {"node": NODE, "version_info": "", "response_nonce": "", "error_detail": None}
    assert (ack["version_info"], ack["response_nonce"], ack["error_detail"]) == ("v1", "n1", None)
    assert (nack["version_info"], nack["response_nonce"]) == ("v1", "n2")
    assert "unknown cluster missing" in nack["error_detail"]
    assert (after_304["version_info"], after_304["response_nonce"]) == ("v1", "n2")
    assert client.version == "v1"
    assert client.last_nack["version"] == "v2" and "missing" in client.last_nack["error"]
    assert client.dump()["version"] == "v1"


async def test_a_view_the_proxy_cannot_apply_is_nacked_and_a_later_good_one_clears_the_error():
    view = wire.to_dict(bookinfo_view())
    plane = ControlPlane(response("v1", "n1", view), response("v2", "n2", view), response("v3", "n3", view))
    applied = Applied(refuse={"v2"})
    await run_until_parked(plane, applied)
    assert [version for _, version in applied.views] == ["v1", "v3"]
    assert [(r["version_info"], r["error_detail"] is not None) for r in plane.requests] == [
        ("", False), ("v1", False), ("v1", True), ("v3", False)]


async def test_error_status_is_treated_as_unreachable_then_recovers(monkeypatch):
    delays = record_sleeps(monkeypatch)
    plane = ControlPlane((500, None), (503, None), response("v1", "n1", wire.to_dict(bookinfo_view())))
    applied = Applied()
    client = await run_until_parked(plane, applied)
    assert delays == [discovery.BACKOFF_START_S, discovery.BACKOFF_START_S * 2]
    assert client.version == "v1" and client.connected


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_backoff_doubles_up_to_a_cap_while_the_control_plane_is_down(monkeypatch):
    delays = record_sleeps(monkeypatch, stop_after=8)
    client = discovery.DiscoveryClient("127.0.0.1", closed_port(), NODE, Applied())
    with pytest.raises(Stop):
        await client.run()
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert not client.connected and client.version == ""


async def test_oversized_view_is_refused_before_reading_it(monkeypatch):
    monkeypatch.setattr(discovery, "MAX_VIEW_BYTES", 10)
    plane = ControlPlane(response("v1", "n1", wire.to_dict(bookinfo_view())))
    delays = record_sleeps(monkeypatch)
    applied = Applied()
    await run_until_parked(plane, applied)
    assert applied.views == [] and delays == [discovery.BACKOFF_START_S]


@pytest.mark.parametrize("body", [[], "view", None])
async def test_a_response_that_is_not_an_object_is_backed_off_not_fatal(monkeypatch, body):
    delays = record_sleeps(monkeypatch)
    plane = ControlPlane((200, body), response("v1", "n1", wire.to_dict(bookinfo_view())))
    applied = Applied()
    client = await run_until_parked(plane, applied)
    assert delays == [discovery.BACKOFF_START_S] and client.version == "v1"


async def test_an_unexpected_error_in_apply_is_backed_off_and_discovery_goes_on(monkeypatch):
    delays = record_sleeps(monkeypatch)
    view = wire.to_dict(bookinfo_view())
    plane = ControlPlane(response("v1", "n1", view), response("v2", "n2", view))
    calls = []

    async def flaky(spec, version):
        calls.append(version)
        if len(calls) == 1:
            raise RuntimeError("bug")

    client = await run_until_parked(plane, flaky)
    assert calls == ["v1", "v2"] and client.version == "v2"
    assert delays == [discovery.BACKOFF_START_S]


async def test_a_malformed_status_line_is_treated_as_unreachable(monkeypatch):
    delays = record_sleeps(monkeypatch, stop_after=1)

    async def garbage(reader, writer):
        await reader.read(65536)
        writer.write(b"BANANA\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = discovery.DiscoveryClient("127.0.0.1", port, NODE, Applied())
    with pytest.raises(Stop):
        await client.run()
    server.close()
    assert delays == [discovery.BACKOFF_START_S] and not client.connected
