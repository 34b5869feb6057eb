"""The endpoints seam, Kubernetes implementation: Services + EndpointSlices + Pods → `RegistryState`.

Three `kube_watch.Watcher`s (cluster-wide); after any change the state is derived again from the three
current sets, so the builder sees exactly what `LocalRegistry` would give it:
- a `registry.Service` per Service (ports with targetPort resolved, a named one through the slices'
  ports; selector); ExternalName Services are not backed by workloads and are left out;
- a `registry.Workload` per endpoint address of a slice whose targetRef is a Pod we know: the Pod's
  labels, namespace and serviceAccountName, `ready` from the endpoint's condition (absent means ready),
  its workload name from the owning ReplicaSet (Deployment name) as Istio derives it, and its port: the
  sidecar's inbound port (container port `weir-inbound`, `mesh.manifests.injection`), else the slice port.
Next: `mesh.control.snapshot` reads `current()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from mesh.control import kube, kube_watch, registry

log = logging.getLogger(__name__)

SERVICES = "/api/v1/services"
ENDPOINT_SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
PODS = "/api/v1/pods"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SIDECAR_INBOUND_PORT_NAME = "weir-inbound"  # the injected sidecar's inbound containerPort (15006)


class KubernetesRegistry(registry.ServiceRegistry):
    def __init__(self, api_server: kube.Api, watcher: Callable[..., kube_watch.Watcher] = kube_watch.Watcher) -> None:
        super().__init__()
        self._state = registry.RegistryState()
        self.watchers = {path: watcher(api_server, path, self._on_change) for path in (SERVICES, ENDPOINT_SLICES, PODS)}
        self._tasks: list[asyncio.Task[None]] = []

    def current(self) -> registry.RegistryState:
        return self._state

    @property
    def loaded(self) -> bool:
        return all(w.stats.synced for w in self.watchers.values())

    async def start(self) -> None:
        """Start the watches; return once all three were listed (the first snapshot needs them)."""
        self._tasks = [asyncio.create_task(w.run(), name=f"watch-{p}") for p, w in self.watchers.items()]
        await asyncio.gather(*(w.synced.wait() for w in self.watchers.values()))
        log.info("registry: %d services, %d workloads", len(self._state.services), len(self._state.workloads))

    async def stop(self) -> None:
        for task in self._tasks:
            await registry.cancel(task)
        self._tasks = []

    def dump(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "watches": {p: w.stats.to_dict() for p, w in self.watchers.items()}}

    def _on_change(self, _objects: kube_watch.Objects) -> None:
        if not self.loaded:
            return  # derive once all three are listed: a half view would drop endpoints for a moment
        state = derive(self.watchers[SERVICES].objects(), self.watchers[ENDPOINT_SLICES].objects(),
                       self.watchers[PODS].objects())
        if state != self._state:
            self._state = state
            self._notify()


def derive(services: Mapping[str, dict], slices: Mapping[str, dict], pods: Mapping[str, dict]) -> registry.RegistryState:
    """The registry model of three API object sets (keys `namespace/name`), sorted like parse_registry."""
    by_service: dict[str, list[dict]] = {}
    for s in slices.values():
        meta = s.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner and s.get("addressType", "IPv4") in ("IPv4", "IPv6"):
            by_service.setdefault(f"{meta.get('namespace')}/{owner}", []).append(s)
    out_services = []
    for key, svc in services.items():
        if (svc.get("spec") or {}).get("type") == "ExternalName":
            continue
        out_services.append(_service(svc, by_service.get(key, ())))
    workloads: dict[tuple[str, str, str], registry.Workload] = {}
    for key in sorted(by_service):
        for s in by_service[key]:
            for w in _workloads(s, pods):
                # a pod behind two Services is one workload; ready if any slice says so
                k = (w.namespace, w.name, w.address)
                if k not in workloads or (w.ready and not workloads[k].ready):
                    workloads[k] = w
    return registry.RegistryState(
        services=tuple(sorted(out_services, key=lambda s: (s.namespace, s.name))),
        workloads=tuple(workloads[k] for k in sorted(workloads)),
    )


def _service(svc: dict[str, Any], slices: Iterable[dict]) -> registry.Service:
    meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
    named = {p.get("name") or "": p.get("port") for s in slices for p in s.get("ports") or () if p.get("port")}
    ports = []
    for p in spec.get("ports") or ():
        if p.get("protocol", "TCP") != "TCP":
            continue  # the mesh carries TCP protocols only
        name = str(p.get("name") or "http")
        target = p.get("targetPort", p["port"])
        if isinstance(target, str):  # a named container port: resolved by the EndpointSlice controller
            target = named.get(p.get("name") or "", p["port"])
        protocol = str(p.get("appProtocol") or "").upper() or registry.protocol_of(name)
        ports.append(registry.ServicePort(name, int(p["port"]), int(target), protocol))
    return registry.Service(
        name=str(meta["name"]), namespace=str(meta.get("namespace") or "default"),
        ports=tuple(sorted(ports, key=lambda p: p.port)), selector=_labels(spec.get("selector")),
    )


def _workloads(s: dict[str, Any], pods: Mapping[str, dict]) -> Iterable[registry.Workload]:
    namespace = (s.get("metadata") or {}).get("namespace") or "default"
    slice_port = next((p.get("port") for p in s.get("ports") or () if p.get("port")), None)
    for ep in s.get("endpoints") or ():
        ref = ep.get("targetRef") or {}
        pod = pods.get(f"{ref.get('namespace') or namespace}/{ref.get('name')}") if ref.get("kind") == "Pod" else None
        if pod is None:
            continue  # not a pod, or its pod is not in our watch yet (its event will rebuild)
        inbound = _inbound_port(pod)
        port = inbound or slice_port
        if not port:
            continue
        pod_meta, pod_spec = pod.get("metadata") or {}, pod.get("spec") or {}
        ready = (ep.get("conditions") or {}).get("ready") is not False
        for address in ep.get("addresses") or ():
            yield registry.Workload(
                name=workload_name(pod_meta), namespace=str(pod_meta.get("namespace") or namespace),
                labels=_labels(pod_meta.get("labels")), address=str(address), port=int(port),
                service_account=str(pod_spec.get("serviceAccountName") or "default"), ready=ready,
                sidecar=inbound is not None,  # no sidecar: no identity and plaintext (Istio's tlsMode label)
            )


def _inbound_port(pod: dict[str, Any]) -> int | None:
    spec = pod.get("spec") or {}
    # the sidecar is a native one (initContainers, restartPolicy Always) since Kubernetes 1.29, else a container
    for container in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ())):
        for p in container.get("ports") or ():
            if p.get("name") == SIDECAR_INBOUND_PORT_NAME and p.get("containerPort"):
                return int(p["containerPort"])
    return None


def workload_name(pod_meta: dict[str, Any]) -> str:
    """Istio's workload name: the Deployment behind a ReplicaSet (its name minus the template hash),
    else the owner's name, else the pod's."""
    owners = pod_meta.get("ownerReferences") or ()
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is None:
        return str(pod_meta.get("name"))
    name = str(owner.get("name"))
    pod_hash = (pod_meta.get("labels") or {}).get("pod-template-hash")
    if owner.get("kind") == "ReplicaSet" and pod_hash and name.endswith(f"-{pod_hash}"):
        return name[: -len(pod_hash) - 1]
    return name


def _labels(data: Any) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in sorted((data or {}).items())})
