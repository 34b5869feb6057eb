"""Root certificate publishing (Istio's istio-ca-root-cert) against the fake API server."""

from __future__ import annotations

import asyncio
import random

from mesh.control import root_publisher
from tests.mesh.control.fakekube import FakeKube, FakeSleep, until

NAMESPACES, CONFIGMAPS = root_publisher.NAMESPACES, "/api/v1/configmaps"
OLD, NEW = "-----BEGIN CERTIFICATE-----\nold\n", "-----BEGIN CERTIFICATE-----\nnew\n"


def namespace(name: str, injection: str | None = "enabled") -> dict:
    labels = {"weir-injection": injection} if injection else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def roots(kube: FakeKube) -> dict[str, str]:
    return {key: cm["data"]["root-cert.pem"] for key, cm in kube.collections.get(CONFIGMAPS, {}).items()}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_configmap_created_in_labelled_namespaces_then_updated():
    async def scenario():
        async with FakeKube() as kube:
            kube.put(NAMESPACES, namespace("bookinfo"))
            kube.put(NAMESPACES, namespace("kube-system", None))
            kube.put(NAMESPACES, namespace("weir-system", None))
            # left by an older CA, to be replaced
            kube.put(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "weir-ca-root-cert", "namespace": "bookinfo"},
                                  "data": {"root-cert.pem": OLD}})
            publisher = root_publisher.RootPublisher(kube.api, NEW.encode(), "weir-system", sleep=FakeSleep())
            await publisher.start()
            want = {"bookinfo/weir-ca-root-cert": NEW, "weir-system/weir-ca-root-cert": NEW}
            await until(lambda: roots(kube) == want, "the first publication")
            created = kube.collections[CONFIGMAPS]["weir-system/weir-ca-root-cert"]
            assert created["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "weir"
            assert ("PUT", "/api/v1/namespaces/bookinfo/configmaps/weir-ca-root-cert") in kube.requests
            await until(lambda: kube.watching(NAMESPACES) == 1, "the namespace watch")
            kube.put(NAMESPACES, namespace("shop"))  # labelled later
            await until(lambda: "shop/weir-ca-root-cert" in roots(kube), "the new namespace")
            writes = [r for r in kube.requests if r[0] in ("POST", "PUT")]
            publisher.set_root(OLD)  # a new root (CA rotation) reaches every namespace
            await until(lambda: set(roots(kube).values()) == {OLD} and len(roots(kube)) == 3, "the rotation")
            assert len([r for r in kube.requests if r[0] in ("POST", "PUT")]) == len(writes) + 3
            # The fake server holds a ConfigMap as soon as the write lands; the publisher notes it when its
            # request returns, a loop turn later.
            await until(lambda: publisher.dump()["published"] == ["bookinfo", "shop", "weir-system"],
                        "the publisher's record of the rotation")
            await publisher.stop()
    run(scenario())


def test_an_up_to_date_configmap_is_left_alone_and_failures_are_retried():
    async def scenario():
        async with FakeKube() as kube:
            kube.put(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "weir-ca-root-cert", "namespace": "weir-system"},
                                  "data": {"root-cert.pem": NEW}})
            kube.put(NAMESPACES, namespace("bookinfo"))
            sleep = FakeSleep()
            publisher = root_publisher.RootPublisher(kube.api, NEW, "weir-system", sleep=sleep,
                                                     rng=random.Random(0))
            kube.refusals["POST"] = [403]  # RBAC not there yet: the first create is forbidden
            await publisher.start()
            await until(lambda: "bookinfo/weir-ca-root-cert" in roots(kube), "the retried publication")
            assert [m for m, p in kube.requests if "weir-system/configmaps" in p] == ["GET"]  # left alone
            assert [m for m, p in kube.requests if "bookinfo/configmaps" in p] == ["GET", "POST", "GET", "POST"]
            assert len(sleep.delays) == 1 and not publisher.failures
            await publisher.stop()
    run(scenario())
