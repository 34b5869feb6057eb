"""The EndpointSlice registry against the fake API server: Services + EndpointSlices + Pods become the
registry model the builder already reads (ready endpoints only, pod labels and service accounts)."""

from __future__ import annotations

import asyncio

from mesh.control import builder, kube_registry, registry, snapshot
from tests.mesh.control import simulate as sim
from tests.mesh.control.conftest import out, sidecar
from tests.mesh.control.fakekube import FakeKube, until

SVC, EPS, PODS = kube_registry.SERVICES, kube_registry.ENDPOINT_SLICES, kube_registry.PODS


def service(name: str, target: int | str = 9080) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "bookinfo"},
            "spec": {"selector": {"app": name}, "ports": [
                {"name": "http", "port": 9080, "targetPort": target, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}]}}


def pod(name: str, app: str, version: str, *, sidecar: bool = True, rs_hash: str = "5d8f",
        native: bool = True) -> dict:
    """A pod as injection makes it: the sidecar a native one (initContainers), or with `native=False` a
    classic second container (pods injected before native sidecars)."""
    ports = [{"name": "http", "containerPort": 9080}]
    containers, init = [{"name": "app", "ports": ports}], []
    if sidecar:
        proxy = {"name": "weir-proxy", "restartPolicy": "Always",
                 "ports": [{"name": "weir-inbound", "containerPort": 15006}]}
        (init if native else containers).append(proxy)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "bookinfo",
                         "labels": {"app": app, "version": version, "pod-template-hash": rs_hash},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": f"{app}-{version}-{rs_hash}",
                                              "controller": True}]},
            "spec": {"serviceAccountName": app, "initContainers": init, "containers": containers}}


def endpoint_slice(name: str, service_name: str, endpoints: list[tuple[str, str, bool | None]]) -> dict:
    def ep(address, pod_name, ready):
        conditions = {} if ready is None else {"ready": ready}
        return {"addresses": [address], "conditions": conditions,
                "targetRef": {"kind": "Pod", "namespace": "bookinfo", "name": pod_name}}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": "bookinfo",
                         "labels": {"kubernetes.io/service-name": service_name}},
            "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
            "endpoints": [ep(*e) for e in endpoints]}


def books_cluster(kube: FakeKube) -> None:
    kube.put(SVC, service("books", target="http"))  # a named targetPort, resolved through the slice
    kube.put(PODS, pod("books-v1-5d8f-abcde", "books", "v1"))
    kube.put(PODS, pod("books-v2-77aa-fghij", "books", "v2", rs_hash="77aa", native=False))
    kube.put(PODS, pod("books-v2-77aa-klmno", "books", "v2", rs_hash="77aa"))
    kube.put(EPS, endpoint_slice("books-x1", "books", [
        ("10.0.0.1", "books-v1-5d8f-abcde", True),
        ("10.0.0.2", "books-v2-77aa-fghij", None),  # no condition: ready
        ("10.0.0.3", "books-v2-77aa-klmno", False),  # not ready
        ("10.0.0.9", "books-v9-gone", True),  # its pod is not known (yet): left out
    ]))


async def running(kube: FakeKube) -> kube_registry.KubernetesRegistry:
    source = kube_registry.KubernetesRegistry(kube.api)
    await asyncio.wait_for(source.start(), 5)
    await until(lambda: all(kube.watching(p) for p in (SVC, EPS, PODS)), "the watches")
    return source


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_services_slices_and_pods_become_the_registry_model():
    async def scenario():
        async with FakeKube() as kube:
            books_cluster(kube)
            source = await running(kube)
            state = source.current()
            assert source.loaded
            assert state.services == (registry.Service("books", "bookinfo", (
                registry.ServicePort("http", 9080, 9080, "HTTP"),), {"app": "books"}),)
            assert [(w.name, w.address, w.port, w.service_account, w.ready) for w in state.workloads] == [
                ("books-v1", "10.0.0.1", 15006, "books", True),
                ("books-v2", "10.0.0.2", 15006, "books", True),
                ("books-v2", "10.0.0.3", 15006, "books", False),
            ]
            assert dict(state.workloads[0].labels) == {"app": "books", "pod-template-hash": "5d8f", "version": "v1"}
            # the builder, unchanged, sends the ready endpoints only, with their identities
            view = builder.build_proxy_view(snapshot.build_snapshot((), state, snapshot.ALLOW_ANY), sidecar())
            endpoints = sim.endpoints(view, out("books"))
            assert [(e.address, e.port, e.workload, e.version) for e in endpoints] == [
                ("10.0.0.1", 15006, "books-v1", "v1"), ("10.0.0.2", 15006, "books-v2", "v2")]
            assert endpoints[0].identity == "spiffe://cluster.local/ns/bookinfo/sa/books"
            await source.stop()
    run(scenario())


def test_changes_to_pods_and_slices_propagate():
    async def scenario():
        async with FakeKube() as kube:
            books_cluster(kube)
            source = await running(kube)
            notified = []
            source.subscribe(lambda: notified.append(1))
            kube.put(EPS, endpoint_slice("books-x1", "books", [
                ("10.0.0.1", "books-v1-5d8f-abcde", False), ("10.0.0.3", "books-v2-77aa-klmno", True)]))
            await until(lambda: [(w.address, w.ready) for w in source.current().workloads]
                        == [("10.0.0.1", False), ("10.0.0.3", True)], "the slice update")
            kube.put(PODS, pod("plain-1", "plain", "v1", sidecar=False))
            kube.put(SVC, service("plain"))
            kube.put(EPS, endpoint_slice("plain-x", "plain", [("10.0.1.1", "plain-1", True)]))
            await until(lambda: len(source.current().workloads) == 3, "the plain pod")
            plain = next(w for w in source.current().workloads if w.name == "plain-v1")
            assert plain.port == 9080 and not plain.sidecar  # no sidecar: the slice's port, outside mTLS
            assert all(w.sidecar for w in source.current().workloads if w.name != "plain-v1")
            kube.delete(SVC, "bookinfo/plain")
            kube.delete(EPS, "bookinfo/plain-x")
            await until(lambda: len(source.current().workloads) == 2, "the deletes")
            assert [s.name for s in source.current().services] == ["books"]
            assert notified
            await source.stop()
    run(scenario())


def test_410_on_pods_relists_them():
    async def scenario():
        async with FakeKube() as kube:
            books_cluster(kube)
            source = await running(kube)
            changed = pod("books-v1-5d8f-abcde", "books", "v1")
            changed["metadata"]["labels"]["track"] = "canary"
            kube.put(PODS, changed, quietly=True)
            kube.expire(PODS)
            await until(lambda: source.current().workloads[0].labels.get("track") == "canary", "relist")
            assert source.dump()["watches"][PODS]["gone"] == 1
            await source.stop()
    run(scenario())


def test_workload_names_follow_istio():
    assert kube_registry.workload_name({"name": "p", "labels": {"pod-template-hash": "abc"},
                                        "ownerReferences": [{"kind": "ReplicaSet", "name": "books-v1-abc",
                                                             "controller": True}]}) == "books-v1"
    assert kube_registry.workload_name({"name": "db-0", "ownerReferences": [
        {"kind": "StatefulSet", "name": "db", "controller": True}]}) == "db"
    assert kube_registry.workload_name({"name": "lonely"}) == "lonely"
