"""The CRD-watch config source against the fake API server: resources reach the snapshot, updates and
deletes propagate, a 410 relists, a bad object is refused and reported while good ones keep working."""

from __future__ import annotations

import asyncio

import pytest

from mesh.control import config_store, kube_config, plane, registry
from tests.mesh.control.conftest import BOOKINFO
from tests.mesh.control.fakekube import FakeKube, until

VS = "/apis/networking.istio.io/v1/virtualservices"
DR = "/apis/networking.istio.io/v1/destinationrules"
PA = "/apis/security.istio.io/v1/peerauthentications"


def vs(name: str = "books", subset: str = "v1", **extra) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "bookinfo", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
            "spec": {"hosts": [name], "http": [{"route": [{"destination": {"host": name, "subset": subset}}]}],
                     **extra}}


def dr(name: str = "books") -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": "bookinfo"},
            "spec": {"host": name, "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                               {"name": "v2", "labels": {"version": "v2"}}]}}


BAD_VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "bad", "namespace": "bookinfo"},
          "spec": {"hosts": ["books"], "http": [{"route": [{"destination": {"host": "books"}, "weight": "lots"}]}]}}


def subsets(control: plane.ControlPlane) -> list:
    snap = control.make_snapshot(1)
    return [(r.key, [d.destination.subset for h in r.spec.http for d in h.route])
            for r in snap.resources if r.kind == "VirtualService"]


async def running(kube: FakeKube) -> tuple[kube_config.KubernetesConfig, plane.ControlPlane]:
    store = config_store.ConfigStore(read_only="kubernetes")
    source = kube_config.KubernetesConfig(kube.api, store)
    await asyncio.wait_for(source.start(), 5)
    await until(lambda: all(kube.watching(k.path) for k in kube_config.KINDS), "all watches")
    control = plane.ControlPlane(store, registry.StaticRegistry(registry.parse_registry(BOOKINFO)))
    return source, control


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_resources_reach_the_snapshot_and_updates_and_deletes_propagate():
    async def scenario():
        async with FakeKube() as kube:
            kube.put(VS, vs())
            kube.put(DR, dr())
            source, control = await running(kube)
            assert source.loaded
            assert [r.key for r in control.make_snapshot(1).resources] == [
                "DestinationRule/bookinfo/books", "VirtualService/bookinfo/books"]
            notified = []
            control.store.subscribe(lambda: notified.append(1))
            kube.put(VS, vs(subset="v2"))
            await until(lambda: subsets(control) == [("VirtualService/bookinfo/books", ["v2"])], "the update")
            kube.delete(DR, "bookinfo/books")
            await until(lambda: control.store.get("DestinationRule/bookinfo/books") is None, "the delete")
            assert len(notified) == 2
            await source.stop()
    run(scenario())


def test_410_relists_and_applies_a_delete_the_watch_never_saw():
    async def scenario():
        async with FakeKube() as kube:
            kube.put(VS, vs("books"))
            kube.put(VS, vs("ratings"))
            source, control = await running(kube)
            kube.delete(VS, "bookinfo/ratings", quietly=True)
            kube.expire(VS)
            await until(lambda: [k for k, _ in subsets(control)] == ["VirtualService/bookinfo/books"], "relist")
            assert source.watchers["VirtualService"].stats.gone == 1
            await source.stop()
    run(scenario())


def test_a_bad_object_is_refused_and_reported_while_good_ones_keep_working(caplog):
    async def scenario():
        async with FakeKube() as kube:
            kube.put(VS, vs("books"))
            kube.put(VS, BAD_VS)
            source, control = await running(kube)
            assert [k for k, _ in subsets(control)] == ["VirtualService/bookinfo/books"]
            error = control.store.rejected["VirtualService/bookinfo/bad"]
            assert "http[0].route[0].weight" in error and "kubernetes:VirtualService/bookinfo/bad" in error
            assert source.dump()["rejected"] == {"VirtualService/bookinfo/bad": error}
            # a good object updated into a bad one: its last good version keeps running
            kube.put(VS, vs("books", subset="v2", http=[{"route": "nonsense"}]))
            await until(lambda: "VirtualService/bookinfo/books" in control.store.rejected, "the rejection")
            assert subsets(control) == [("VirtualService/bookinfo/books", ["v1"])]
            kube.put(VS, vs("books", subset="v2"))  # fixed: the new version replaces it, the report goes
            await until(lambda: subsets(control) == [("VirtualService/bookinfo/books", ["v2"])], "the fix")
            assert list(control.store.rejected) == ["VirtualService/bookinfo/bad"]
            kube.delete(VS, "bookinfo/bad")
            await until(lambda: not control.store.rejected, "the bad one gone")
            await source.stop()
    run(scenario())
    assert "rejected VirtualService/bookinfo/books (its last good version keeps running)" in caplog.text


def test_unsupported_istio_is_refused_like_an_apply():
    async def scenario():
        async with FakeKube() as kube:
            kube.put("/apis/security.istio.io/v1/authorizationpolicies", {
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "ext", "namespace": "bookinfo"},
                "spec": {"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{}]}})
            kube.put(PA, {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                          "metadata": {"name": "default", "namespace": "weir-system"},
                          "spec": {"mtls": {"mode": "STRICT"}}})
            source, control = await running(kube)
            assert [r.key for r in control.store.resources()] == ["PeerAuthentication/weir-system/default"]
            assert "AuthorizationPolicy/bookinfo/ext" in control.store.rejected
            await source.stop()
    run(scenario())


def test_the_store_is_read_only_for_the_http_api_on_kubernetes():
    store = config_store.ConfigStore(read_only="on kubernetes, config comes from the custom resources")
    with pytest.raises(config_store.StoreError, match="custom resources"):
        store.apply([("a.yaml", "")])
    with pytest.raises(config_store.StoreError):
        store.delete_keys(["VirtualService/bookinfo/books"])
