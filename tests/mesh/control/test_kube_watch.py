"""The shared list+watch loop against the fake API server: bookmarks, reconnects, 410 relists, backoff."""

from __future__ import annotations

import asyncio
import random

from mesh.control import kube_watch
from tests.mesh.control.fakekube import FakeKube, FakeSleep, until

PODS = "/api/v1/pods"


def pod(name: str, ns: str = "bookinfo", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels}}


async def started(kube: FakeKube, **kw) -> tuple[kube_watch.Watcher, list, asyncio.Task]:
    seen: list[set[str]] = []
    watcher = kube_watch.Watcher(kube.api, PODS, lambda objs: seen.append(set(objs)), sleep=FakeSleep(),
                                 rng=random.Random(0), **kw)
    task = asyncio.create_task(watcher.run())
    await asyncio.wait_for(watcher.synced.wait(), 5)
    await until(lambda: kube.watching(PODS) == 1, "the watch")
    return watcher, seen, task


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_list_then_events_added_modified_deleted():
    async def scenario():
        async with FakeKube() as kube:
            kube.put(PODS, pod("a"))
            watcher, seen, task = await started(kube)
            assert seen[-1] == {"bookinfo/a"}
            kube.put(PODS, pod("b"))
            kube.put(PODS, pod("a", version="v2"))
            kube.delete(PODS, "bookinfo/b")
            await until(lambda: watcher.stats.events == 3, "three events")
            assert set(watcher.objects()) == {"bookinfo/a"}
            assert watcher.objects()["bookinfo/a"]["metadata"]["labels"] == {"version": "v2"}
            assert watcher.stats.lists == 1
            task.cancel()
    run(scenario())


def test_a_stream_the_server_ends_is_reopened_from_the_last_version_bookmarks_included():
    async def scenario():
        async with FakeKube() as kube:
            watcher, _, task = await started(kube)
            kube.bookmark(PODS)
            await until(lambda: watcher.stats.resource_version == str(kube.version), "the bookmark")
            kube.end_streams(PODS)
            await until(lambda: kube.watching(PODS) == 1, "the reopened watch")
            watches = [p for m, p in kube.requests if "watch=1" in p]
            assert len(watches) == 2 and f"resourceVersion={kube.version}" in watches[-1]
            assert "allowWatchBookmarks=true" in watches[-1]
            assert watcher.stats.lists == 1  # no relist for a normal end
            task.cancel()
    run(scenario())


def test_410_gone_mid_watch_relists_and_finds_what_the_watch_missed():
    async def scenario():
        async with FakeKube() as kube:
            kube.put(PODS, pod("a"))
            kube.put(PODS, pod("b"))
            watcher, seen, task = await started(kube)
            kube.delete(PODS, "bookinfo/b", quietly=True)  # lost in the compaction
            kube.put(PODS, pod("c"), quietly=True)
            kube.expire(PODS)
            await until(lambda: watcher.stats.lists == 2, "the relist")
            assert watcher.stats.gone == 1
            assert set(watcher.objects()) == {"bookinfo/a", "bookinfo/c"}
            assert seen[-1] == {"bookinfo/a", "bookinfo/c"}
            task.cancel()
    run(scenario())


def test_a_watch_from_a_compacted_version_is_answered_410_and_relisted():
    async def scenario():
        async with FakeKube() as kube:
            watcher, _, task = await started(kube)
            kube.compacted[PODS] = kube.version + 1  # the next reconnect's version is already gone
            kube.put(PODS, pod("x"), quietly=True)
            kube.end_streams(PODS)
            await until(lambda: watcher.stats.lists == 2, "the relist")
            assert "bookinfo/x" in watcher.objects()
            task.cancel()
    run(scenario())


def test_errors_back_off_doubling_then_relist():
    async def scenario():
        async with FakeKube() as kube:
            kube.failing[PODS] = 3
            kube.put(PODS, pod("a"))
            watcher, _, task = await started(kube)
            assert watcher.stats.errors == 3 and "etcdserver" in watcher.stats.last_error
            assert [round(d / 0.5) for d in watcher.sleep.delays] == [1, 2, 4]  # ±20 % jitter, seeded
            assert set(watcher.objects()) == {"bookinfo/a"}
            assert "synced=True" in repr(watcher)
            task.cancel()
    run(scenario())


def test_backoff_is_capped():
    watcher = kube_watch.Watcher(None, PODS, lambda _: None, rng=random.Random(1))
    assert kube_watch.BACKOFF_MAX_S * 0.8 <= watcher.backoff(30) <= kube_watch.BACKOFF_MAX_S * 1.2
