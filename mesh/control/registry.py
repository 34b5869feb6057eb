"""The endpoints seam: which services exist and which workloads back them.

`ServiceRegistry` is the interface (an immutable `RegistryState` plus a change notification);
`LocalRegistry` implements it for local mode by polling `registry.json` (docs/architecture.md);
`mesh.control.kube_registry.KubernetesRegistry` is the second one (Services, EndpointSlices, Pods).
`mesh.control.snapshot` reads the state.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mesh import api

log = logging.getLogger(__name__)


async def cancel(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has stopped."""
    if task is not None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

POLL_INTERVAL = 0.2  # seconds between mtime checks of registry.json

_EMPTY: Mapping[str, str] = MappingProxyType({})


class RegistryError(ValueError):
    """registry.json does not describe services and workloads."""


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    target_port: int
    protocol: str = "HTTP"


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    namespace: str
    ports: tuple[ServicePort, ...]
    selector: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.{api.CLUSTER_DOMAIN}"

    def selects(self, workload: Workload) -> bool:
        """Kubernetes selection: same namespace, non-empty selector contained in the workload's labels."""
        return (
            bool(self.selector)
            and workload.namespace == self.namespace
            and labels_match(self.selector, workload.labels)
        )


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    namespace: str
    labels: Mapping[str, str]
    address: str
    port: int  # the workload's sidecar inbound port (local mode: pod IP + targetPort)
    service_account: str = "default"
    ready: bool = True
    sidecar: bool = True  # runs a Weir sidecar (every local workload; on Kubernetes, a pod with weir-proxy)


@dataclass(frozen=True, slots=True)
class RegistryState:
    services: tuple[Service, ...] = ()
    workloads: tuple[Workload, ...] = ()
    # The writer's counter (registry.json's `generation`; 0 when the source has none): a snapshot built
    # from this state shows it in /debug/push_status, so a writer can tell its change has been read.
    generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "services": [
                {
                    "name": s.name,
                    "namespace": s.namespace,
                    "fqdn": s.fqdn,
                    "ports": [
                        {"name": p.name, "port": p.port, "targetPort": p.target_port, "protocol": p.protocol}
                        for p in s.ports
                    ],
                    "selector": dict(s.selector),
                }
                for s in self.services
            ],
            "workloads": [
                {
                    "name": w.name,
                    "namespace": w.namespace,
                    "labels": dict(w.labels),
                    "serviceAccount": w.service_account,
                    "address": w.address,
                    "port": w.port,
                    "ready": w.ready,
                    "sidecar": w.sidecar,
                }
                for w in self.workloads
            ],
        }


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class ServiceRegistry(abc.ABC):
    """Where endpoints come from. `current()` is immutable; `subscribe` callbacks run on every change."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    @abc.abstractmethod
    def current(self) -> RegistryState: ...

    @property
    @abc.abstractmethod
    def loaded(self) -> bool:
        """True once a first state was read (the control plane is not ready before)."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Begin watching the source."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop watching."""

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()


class StaticRegistry(ServiceRegistry):
    """A fixed state, replaced by `set()`: for tests and tools."""

    def __init__(self, state: RegistryState | None = None) -> None:
        super().__init__()
        self._state = state or RegistryState()

    def current(self) -> RegistryState:
        return self._state

    @property
    def loaded(self) -> bool:
        return True

    def set(self, state: RegistryState) -> None:
        if state != self._state:
            self._state = state
            self._notify()


class LocalRegistry(ServiceRegistry):
    """registry.json, written atomically by the supervisor, polled by mtime/size/inode."""

    def __init__(self, path: str | os.PathLike[str], poll_interval: float = POLL_INTERVAL) -> None:
        super().__init__()
        self.path = Path(path)
        self.poll_interval = poll_interval
        self._state = RegistryState()
        self._loaded = False
        self._stamp: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def current(self) -> RegistryState:
        return self._state

    @property
    def loaded(self) -> bool:
        return self._loaded

    def poll(self) -> bool:
        """Re-read the file if it changed; True when the state changed. Bad content keeps the last good."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if not self._loaded:
                log.info("registry %s does not exist yet: starting with no services", self.path)
                self._loaded = True
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            state = parse_registry(json.loads(self.path.read_text()))
        except (OSError, ValueError) as exc:  # JSONDecodeError and RegistryError are ValueErrors
            log.error("registry %s unreadable, keeping the last good state: %s", self.path, exc)
            return False
        self._loaded = True
        if state == self._state:
            return False
        self._state = state
        log.info("registry: %d services, %d workloads", len(state.services), len(state.workloads))
        self._notify()
        return True

    async def start(self) -> None:
        self.poll()
        self._task = asyncio.create_task(self._run(), name="registry-poll")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.poll()
            except Exception:  # never let the watcher die; the next poll retries
                log.exception("registry poll failed")


def parse_registry(data: Any) -> RegistryState:
    """registry.json (docs/architecture.md) → RegistryState, sorted; raises RegistryError."""
    if not isinstance(data, dict):
        raise RegistryError("expected an object with services and workloads")
    try:
        services = tuple(sorted((_service(s) for s in data.get("services") or []), key=_key))
        workloads = tuple(sorted((_workload(w) for w in data.get("workloads") or []), key=_key))
        generation = int(data.get("generation") or 0)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RegistryError(f"malformed registry entry: {exc!r}") from None
    return RegistryState(services=services, workloads=workloads, generation=generation)


def _key(item: Service | Workload) -> tuple[str, str]:
    return (item.namespace, item.name)


def _labels(data: Any) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in sorted((data or {}).items())})


def _service(data: dict[str, Any]) -> Service:
    ports = tuple(
        sorted(
            (
                ServicePort(
                    name=str(p.get("name") or "http"),
                    port=int(p["port"]),
                    target_port=int(p.get("targetPort") or p["port"]),
                    protocol=str(p.get("protocol") or protocol_of(str(p.get("name") or "http"))),
                )
                for p in data.get("ports") or []
            ),
            key=lambda p: p.port,
        )
    )
    return Service(
        name=str(data["name"]),
        namespace=str(data.get("namespace") or "default"),
        ports=ports,
        selector=_labels(data.get("selector")),
    )


def protocol_of(port_name: str) -> str:
    """Istio's protocol selection by port name prefix (`http`, `http-web`, `grpc-x`, `tcp`...)."""
    prefix = port_name.split("-", 1)[0].upper()
    return prefix if prefix in ("HTTP", "HTTP2", "GRPC", "TCP", "TLS", "HTTPS", "MONGO", "REDIS") else "HTTP"


def _workload(data: dict[str, Any]) -> Workload:
    return Workload(
        name=str(data["name"]),
        namespace=str(data.get("namespace") or "default"),
        labels=_labels(data.get("labels")),
        address=str(data.get("address") or "127.0.0.1"),
        port=int(data["port"]),
        service_account=str(data.get("serviceAccount") or "default"),
        ready=bool(data.get("ready", True)),
        sidecar=bool(data.get("sidecar", True)),
    )
