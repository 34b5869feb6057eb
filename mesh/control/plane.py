"""The control plane as one object: config store + registry → snapshots → per-proxy views.

Wires the three stages (STYLE.md item 2): `config_store`/`registry` (inputs) notify `push.Pusher`, which
takes a `snapshot` and lets `discovery` rebuild views with `builder.build_proxy_view`. The CA's
`certificates` service rides along (`None` when run without a CA). `server` (meshctl's loopback API) and
`channel` (the proxies' TLS mesh channel) expose it; `__main__` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mesh.control import (
    builder,
    certificates,
    config_store,
    discovery,
    jwks,
    push,
    registry,
    snapshot,
    traces,
)

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
        certs: certificates.CertificateService | None = None,
        settings: snapshot.MeshSettings = snapshot.DEFAULT_SETTINGS,
        jwks_resolver: jwks.JwksResolver | None = None,
    ) -> None:
        if outbound_policy not in snapshot.OUTBOUND_POLICIES:
            raise ValueError(f"outbound policy must be one of {', '.join(snapshot.OUTBOUND_POLICIES)}")
        self.store = store
        self.registry = source
        self.traces = traces.TraceStore()  # spans the proxies send (meshctl trace)
        self.outbound_policy = outbound_policy
        self.certificates = certs
        self.settings = settings
        # JWKS fetches happen here, outside the pure builder; a changed key set takes a new snapshot.
        self.jwks = jwks_resolver or jwks.JwksResolver(on_change=lambda: self.pusher.trigger())
        self.discovery = discovery.Discovery(self.make_snapshot(0), builder.build_proxy_view, wall_clock)
        self.pusher = push.Pusher(self.discovery, self.make_snapshot, clock, quiet, max_delay)
        store.subscribe(self.pusher.trigger)
        source.subscribe(self.pusher.trigger)
        self._task: asyncio.Task[None] | None = None
        self.started = False

    def make_snapshot(self, revision: int) -> snapshot.Snapshot:
        resources = self.store.resources()
        return snapshot.build_snapshot(
            resources, self.registry.current(), self.outbound_policy, revision=revision,
            settings=self.settings, jwks=self.jwks.resolve(resources),
        )

    @property
    def snapshot(self) -> snapshot.Snapshot:
        return self.discovery.snapshot

    @property
    def ready(self) -> bool:
        return self.started and self.registry.loaded

    async def start(self) -> None:
        await self.registry.start()
        await self.jwks.prefetch(self.store.resources())
        await self.jwks.start()
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
        await self.jwks.close()
        await self.registry.stop()
