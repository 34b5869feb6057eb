"""The control plane's two HTTP faces with aiohttp's test client: the TLS mesh channel (long poll,
ACK/NACK) and meshctl's plain API (config apply/delete, proxy status, debug pages)."""

from __future__ import annotations

import asyncio
import time

from mesh.control import config_store, discovery, registry
from tests.mesh.control import meshchannel
from tests.mesh.control.conftest import BOOKINFO

NODE = {"id": "gw-v1.bookinfo", "role": "sidecar", "namespace": "bookinfo", "workload": "gw-v1",
        "labels": {"app": "gw", "version": "v1"}, "serviceAccount": "gw", "ports": {"app": 21010}}
DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: books, namespace: bookinfo}
spec:
  host: books
  subsets: [{name: v1, labels: {version: v1}}]
"""
BAD = DR.replace("name: v1, labels", "name: V1!, labels")


def run(scenario, tmp_path, hold=2.0, reg=None):
    """`scenario(api, mesh, control, source)`: mesh is a TLS client holding gw's certificate."""
    async def with_clients(h: meshchannel.Harness):
        return await scenario(h.api, await h.client("bookinfo", "gw"), h.control, h.source)

    return meshchannel.run(with_clients, tmp_path, hold=hold, reg=reg)


async def poll(mesh, version="", nonce="", error=None, node=NODE):
    resp = await mesh.post("/v1/discovery", json={"node": node, "version_info": version,
                                                  "response_nonce": nonce, "error_detail": error})
    return resp.status, (await resp.json() if resp.status != 304 else None)


async def apply(client, text, **extra):
    resp = await client.post("/v1/config", json={"files": [{"name": "x.yaml", "text": text}], **extra})
    return resp.status, await resp.json()


def test_long_poll_answers_on_change(tmp_path):
    async def scenario(client, mesh, control, source):
        status, first = await poll(mesh)
        assert status == 200 and first["view"]["proxy"] == NODE["id"]
        waiting = asyncio.create_task(poll(mesh, first["version_info"], first["nonce"]))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # nothing changed: held
        started = time.monotonic()
        status, body = await apply(client, DR)
        assert status == 200 and body["applied"] == ["DestinationRule/bookinfo/books"]
        status, second = await asyncio.wait_for(waiting, 2)
        assert status == 200 and second["version_info"] != first["version_info"]
        assert time.monotonic() - started < 1.0
        names = {c["name"] for c in second["view"]["clusters"]}
        assert "outbound|9080|v1|books.bookinfo.svc.cluster.local" in names
        # a registry change is pushed too
        waiting = asyncio.create_task(poll(mesh, second["version_info"], second["nonce"]))
        source.set(registry.parse_registry({**BOOKINFO, "workloads": BOOKINFO["workloads"][:1]}))
        status, third = await asyncio.wait_for(waiting, 2)
        assert status == 200 and third["version_info"] != second["version_info"]

    run(scenario, tmp_path)


def test_long_poll_times_out_with_304(tmp_path):
    async def scenario(client, mesh, control, source):
        _, first = await poll(mesh)
        status, _ = await poll(mesh, first["version_info"], first["nonce"])
        return status

    assert run(scenario, tmp_path, hold=0.2) == 304


def test_ack_and_nack_show_in_proxies(tmp_path):
    async def scenario(client, mesh, control, source):
        _, first = await poll(mesh)
        waiting = asyncio.create_task(poll(mesh, first["version_info"], first["nonce"]))
        await asyncio.sleep(0.05)
        rows = (await (await client.get("/v1/proxies")).json())["proxies"]
        assert rows[0]["status"] == "SYNCED" and rows[0]["acked"] == first["version_info"]
        await apply(client, DR)
        _, second = await waiting
        # the proxy refuses it: NACK, keeps the old version; the refused one is not sent again
        status, _ = await asyncio.wait_for(
            poll(mesh, first["version_info"], second["nonce"], {"message": "cannot compile"}), 2
        )
        assert status == 304
        rows = (await (await client.get("/v1/proxies")).json())["proxies"]
        row = rows[0]
        assert row["status"] == "NACKED" and row["sent"] == second["version_info"]
        assert row["acked"] == first["version_info"] and row["lastNack"]["error"] == "cannot compile"
        syncz = await (await client.get("/debug/syncz")).json()
        assert syncz["proxies"][0]["nonce"] == second["nonce"]

    run(scenario, tmp_path, hold=0.2)


def test_bad_apply_is_refused_and_old_config_kept(tmp_path):
    async def scenario(client, mesh, control, source):
        assert (await apply(client, DR))[0] == 200
        status, body = await apply(client, DR.replace("name: books,", "name: other,") + "---" + BAD)
        assert status == 400 and "DestinationRule/bookinfo/books" in body["error"] and body["path"]
        listed = await (await client.get("/v1/config?kind=DestinationRule")).json()
        assert [r["metadata"]["name"] for r in listed["resources"]] == ["books"]
        assert listed["resources"][0]["spec"]["subsets"][0]["name"] == "v1"
        bad_body = await client.post("/v1/config", json={"nope": 1})
        assert bad_body.status == 400

    run(scenario, tmp_path)


def test_apply_persists_and_delete_removes(tmp_path):
    async def scenario(client, mesh, control, source):
        status, body = await apply(client, DR)
        assert status == 200 and body["changes"] == [{"key": "DestinationRule/bookinfo/books", "action": "created"}]
        reloaded = config_store.ConfigStore(tmp_path / "state")
        assert reloaded.load_persisted() == ["DestinationRule/bookinfo/books"]
        resp = await client.delete("/v1/config", json={"files": [{"name": "x.yaml", "text": DR}]})
        assert (await resp.json())["deleted"] == ["DestinationRule/bookinfo/books"]
        assert config_store.ConfigStore(tmp_path / "state").load_persisted() == []

    run(scenario, tmp_path)


def test_ready_and_debug_endpoints(tmp_path):
    async def scenario(client, mesh, control, source):
        assert (await client.get("/ready")).status == 200
        listing = await (await client.get("/debug/list")).json()
        paths = {e["path"] for e in listing["endpoints"]}
        assert {"/debug/syncz", "/debug/config_dump?proxy=ID", "/debug/registry"} <= paths
        assert (await client.get("/debug/config_dump?proxy=nobody")).status == 404
        await poll(mesh)
        dump = await (await client.get(f"/debug/config_dump?proxy={NODE['id']}")).json()
        assert dump["view"]["proxy"] == NODE["id"] and dump["version"]
        reg = await (await client.get("/debug/registry")).json()
        assert reg["loaded"] and len(reg["services"]) == 4
        push = await (await client.get("/debug/push_status")).json()
        assert push["snapshots"] >= 1
        bad = await mesh.post("/v1/discovery", json={"node": {"role": "sidecar"}})
        assert bad.status == 400
        assert (await client.post("/v1/discovery", json={"node": NODE})).status == 404  # not on meshctl's API
        ca = await (await client.get("/debug/ca")).json()
        assert ca["root"]["fingerprintSha256"].count(":") == 31 and ca["workloadCertTtlSeconds"] > 0
        await control.stop()
        assert (await client.get("/ready")).status == 503

    run(scenario, tmp_path)


def test_push_status_reports_the_registry_generation_its_snapshot_was_built_from(tmp_path):
    async def scenario(client, mesh, control, source):
        async def push_status():
            return await (await client.get("/debug/push_status")).json()

        assert (await push_status())["registryGeneration"] == 0
        source.set(registry.parse_registry({**BOOKINFO, "generation": 7}))
        assert (await push_status())["registryGeneration"] == 0, "read, but no snapshot taken from it yet"
        for _ in range(100):  # the debounce: a snapshot within MAX_DELAY
            status = await push_status()
            if status["registryGeneration"] == 7:
                break
            await asyncio.sleep(0.02)
        assert status["registryGeneration"] == 7 and status["pending"] == 0, status

    run(scenario, tmp_path)


def test_proxies_gone_long_ago_leave_the_status_table(tmp_path):
    async def scenario(client, mesh, control, source):
        await poll(mesh)
        assert [r["proxy"] for r in (await (await client.get("/v1/proxies")).json())["proxies"]] == [NODE["id"]]
        now = control.discovery.clock() + discovery.FORGET_AFTER + 1
        control.discovery.clock = lambda: now
        for path in ("/v1/proxies", "/debug/syncz"):
            assert (await (await client.get(path)).json())["proxies"] == []

    run(scenario, tmp_path)
