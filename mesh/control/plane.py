"""The control plane as one object: config store + registry → snapshots → per-proxy views.

Wires the three stages (STYLE.md item 2): `config_store`/`registry` (inputs) notify `push.Pusher`, which
takes a `snapshot` and lets `discovery` rebuild views with `builder.build_proxy_view`. `server` exposes
it over HTTP; `__main__` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mesh.control import builder, config_store, discovery, push, registry, snapshot

log = logging.getLogger(__name__)


class ControlPlane:
    def __init__(
        self,
        store: config_store.ConfigStore,
        source: registry.ServiceRegistry,
        outbound_policy: str = snapshot.ALLOW_ANY,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        quiet: float = push.QUIET_PERIOD,
        max_delay: float = push.MAX_DELAY,
    ) -> None:
        if outbound_policy not in snapshot.OUTBOUND_POLICIES:
            raise ValueError(f"outbound policy must be one of {', '.join(snapshot.OUTBOUND_POLICIES)}")
        self.store = store
        self.registry = source
        self.outbound_policy = outbound_policy
        self.discovery = discovery.Discovery(self.make_snapshot(0), builder.build_proxy_view, wall_clock)
        self.pusher = push.Pusher(self.discovery, self.make_snapshot, clock, quiet, max_delay)
        store.subscribe(self.pusher.trigger)
        source.subscribe(self.pusher.trigger)
        self._task: asyncio.Task[None] | None = None
        self.started = False

    def make_snapshot(self, revision: int) -> snapshot.Snapshot:
        return snapshot.build_snapshot(
            self.store.resources(), self.registry.current(), self.outbound_policy, revision=revision
        )

    @property
    def snapshot(self) -> snapshot.Snapshot:
        return self.discovery.snapshot

    @property
    def ready(self) -> bool:
        return self.started and self.registry.loaded

    async def start(self) -> None:
        await self.registry.start()
        # The first snapshot is taken now, not after the debounce: proxies connecting at once get a view.
        self.pusher.debouncer.event()
        self.pusher.snapshot_now()
        while (pid := self.pusher.queue.pop()) is not None:
            self.discovery.refresh(pid)
        self._task = asyncio.create_task(self.pusher.run(), name="pusher")
        self.started = True
        log.info("control plane started: %d resources, %d services, %d workloads",
                 len(self.snapshot.resources), len(self.snapshot.services), len(self.snapshot.registry.workloads))

    async def stop(self) -> None:
        """Shutdown sequence: not ready → answer every long poll → stop pushing → stop watching."""
        self.started = False
        self.discovery.close()
        await registry.cancel(self._task)
        self._task = None
        await self.registry.stop()
