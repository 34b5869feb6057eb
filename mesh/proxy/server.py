"""The proxy process: listeners bound from the view, the admin endpoint, discovery, graceful shutdown.

A sidecar binds its inbound and outbound listeners once its first view arrives; a gateway binds one
listener per Gateway server port in its view (mapped to local ports with `--port-map`) and re-binds as
views change. A listener that cannot be bound makes the view fail: it is NACKed, like Envoy's LDS, and
the previous view stays in force. Shutdown (SIGTERM, `POST /quitquitquit`) is a sequence: not ready (the
admin's `/ready` answers 503 DRAINING) → stop accepting → drain the downstream connections up to the drain
timeout (`mesh.proxy.drain`: idle ones closed at once, in-flight exchanges finish with `Connection:
close`) → cancel what is left → close the pools → exit 0. Views still arrive while draining: retries of
in-flight requests see endpoints leave.

With a control plane, the certificate agent (`mesh.proxy.certagent`) runs first: discovery starts once
the proxy holds its workload certificate, over the TLS mesh channel (`mesh.proxy.channel`). An agent
that runs out of credentials stops the proxy with EXIT_NO_CREDENTIALS, so its supervisor restarts it
with a new bootstrap token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from mesh.proxy import admin as admin_mod
from mesh.proxy import (
    certagent,
    discovery,
    downstream,
    drain,
    forwarding,
    gateway_tls,
    heap,
    inbound_tls,
    peer_authentication,
    runtime,
    telemetry,
)
from mesh.proxy import channel as channel_mod
from mesh.view import model

log = logging.getLogger("weir.proxy")

DRAIN_TIMEOUT_S = drain.DRAIN_TIMEOUT_S
# How often idle upstream connections are swept (closed past their idle timeout, or when their endpoint
# left the view): bounds sockets and pools held for passthrough hosts and removed endpoints.
POOL_SWEEP_INTERVAL_S = 30.0
EXIT_NO_CREDENTIALS = 3  # the certificate expired and no credential is left to renew it


class ProxyServer:
    def __init__(self, rt: runtime.ProxyRuntime, *, bind: str, inbound_port: int = 0, outbound_port: int = 0,
                 port_map: dict[int, int] | None = None, inbound_bind: str | None = None,
                 drain_timeout: float = DRAIN_TIMEOUT_S,
                 memory_release_interval: float = heap.MEMORY_RELEASE_INTERVAL_S,
                 on_first_view: Callable[[], None] | None = None) -> None:
        self.runtime = rt
        self.bind = bind  # the outbound listener (the app's HTTP_PROXY): loopback
        self.inbound_bind = inbound_bind or bind  # inbound and gateway listeners, health: the pod IP in a pod
        self.inbound_port = inbound_port
        self.outbound_port = outbound_port
        self.port_map = port_map or {}
        self.drain_timeout = drain_timeout
        self.memory_release_interval = memory_release_interval
        self.on_first_view = on_first_view  # the process entry point's (mesh.proxy.heap.freeze_startup)
        self.heap = heap.HeapReleaser.for_this_process(rt.counters)
        self.drained: drain.DrainResult | None = None  # how the last shutdown's drain ended
        self.admin = admin_mod.Admin()
        self.discovery: discovery.DiscoveryClient | None = None
        self.servers: dict[int, tuple[asyncio.AbstractServer, forwarding.Forwarding]] = {}
        self._tasks: list[asyncio.Task] = []
        self._admin_server: asyncio.AbstractServer | None = None
        self._health_server: asyncio.AbstractServer | None = None
        self.admin.register_dump("proxy", rt.config_dump)
        self.admin.register_dump("listeners_bound", lambda: sorted(self.servers))
        self.admin.handle("GET", "/stats/prometheus", lambda q: (200, "text/plain; version=0.0.4",
                                                                 rt.prometheus().encode()))
        self.admin.handle("GET", "/stats", lambda q: (200, "text/plain", rt.prometheus().encode()))
        self.admin.handle("GET", "/access_log", self._access_log)
        self.admin.handle("POST", "/quitquitquit", self._quit)
        self.stopped = asyncio.Event()
        self.exit_code = 0

    def _access_log(self, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        """The most recent requests this proxy handled (mesh.proxy.telemetry), newest last: `?limit=N`."""
        try:
            limit = int(query.get("limit", ["50"])[0])
        except ValueError:
            return 400, "text/plain", b"limit must be a number\n"
        entries = self.runtime.telemetry.recent_dicts(min(max(limit, 0), telemetry.RECENT))
        return 200, "application/json", json.dumps(entries).encode()

    # -- view ----------------------------------------------------------------------------------------------
    async def apply_view(self, spec: model.ProxyView, version: str) -> None:
        """Bind what the view needs and swap it in, or raise ViewError (NACK) with the old view untouched.
        While draining nothing is bound any more: the view only replaces the routing in force."""
        try:
            if self.admin.draining:
                self.runtime.apply(spec, version)
                return
            await self._apply_view(spec, version)
        except model.ViewError:
            self.runtime.counters.inc("config_rejected_total")
            raise

    async def _apply_view(self, spec: model.ProxyView, version: str) -> None:
        model.check_references(spec)
        # Gateway server certificates load before anything is bound: a bad file NACKs the view untouched.
        gateways = (gateway_tls.compile_listeners(self.runtime, spec, self.port_map)
                    if self.runtime.identity.role == "gateway" else {})
        wanted = self._wanted_listeners(spec)
        opened: list[int] = []
        try:
            for port, (direction, table) in wanted.items():
                if port in self.servers:
                    continue
                fwd = forwarding.Forwarding(self.runtime, direction, table)
                server = await self._listen(fwd, direction, port)
                self.servers[port] = (server, fwd)
                opened.append(port)
        except OSError as exc:
            self._close(opened)
            host = self.bind if wanted[port][0] == model.OUTBOUND else self.inbound_bind
            raise model.ViewError(f"cannot bind listener on {host}:{port}: {exc.strerror or exc}") from None
        try:
            self.runtime.apply(spec, version)
        except model.ViewError:
            self._close(opened)
            raise
        for port, (_, table) in wanted.items():  # only now: a failed bind must leave the old view whole
            self.servers[port][1].table = table
            if port in gateways:
                self.servers[port][0].policy.update(*gateways[port])
        for port in [p for p in self.servers if p not in wanted]:
            self.servers.pop(port)[0].close()
        self.sweep_pools()
        if not self.admin.ready and self.on_first_view is not None:
            self.on_first_view()
        self.admin.ready = True

    async def _listen(self, fwd: forwarding.Forwarding, direction: str, port: int):
        """Outbound: asyncio's server (always plaintext, the cheapest accept). Inbound and gateway: the
        proxy's own accept path, which secures each connection as the view in force says, without
        re-binding when it changes (mesh.proxy.inbound_tls)."""
        if direction == model.OUTBOUND:
            return await asyncio.get_running_loop().create_server(
                lambda: downstream.DownstreamConnection(fwd, port, self.runtime.connections),
                self.bind, port, reuse_address=True, backlog=1024)
        if direction == model.INBOUND:
            policy = peer_authentication.PeerAuthentication(self.runtime, fwd)
        else:
            policy = gateway_tls.GatewayPolicy(self.runtime, fwd)
        return inbound_tls.Listener.bind(self.runtime, policy, self.inbound_bind, port)

    def sweep_pools(self) -> None:
        view = self.runtime.view
        if view is not None:
            closed = self.runtime.pools.sweep(asyncio.get_running_loop().time(), self.runtime.origination.keys(view))
            if closed:
                self.runtime.counters.inc("upstream_cx_idle_closed_total", closed)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(POOL_SWEEP_INTERVAL_S)
            self.sweep_pools()

    async def _release_memory_forever(self) -> None:
        while True:
            await asyncio.sleep(self.memory_release_interval)
            try:
                self.heap.release()
            except Exception:  # a failed release must not end the releases that follow
                self.runtime.counters.inc(heap.FAILURES)
                log.exception("memory release failed")

    def _close(self, ports: list[int]) -> None:
        for port in ports:
            self.servers.pop(port)[0].close()

    def _wanted_listeners(self, spec: model.ProxyView) -> dict[int, tuple[str, str | None]]:
        if self.runtime.identity.role != "gateway":
            return {self.inbound_port: (model.INBOUND, None), self.outbound_port: (model.OUTBOUND, None)}
        return {self.port_map.get(listener.port, listener.port): (model.GATEWAY, listener.route_table)
                for listener in spec.listeners if listener.direction == model.GATEWAY}

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self, admin_port: int, control_plane: channel_mod.ControlChannel | None, node: dict,
                    bootstrap: model.ProxyView | None = None, agent: certagent.CertAgent | None = None,
                    health_port: int | None = None) -> None:
        self._admin_server = await self.admin.serve("127.0.0.1", admin_port)
        if health_port is not None:
            self._health_server = await self.admin.serve_health(self.inbound_bind, health_port)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._sweep_forever()))
        if self.memory_release_interval > 0:
            self._tasks.append(loop.create_task(self._release_memory_forever(), name="heap"))
        self.admin.register_dump("secrets", agent.dump if agent is not None else self._static_secrets)
        if bootstrap is not None:
            from mesh.view import wire

            await self.apply_view(bootstrap, wire.version_of(bootstrap))
        if agent is not None:
            task = loop.create_task(agent.run(), name="certagent")
            task.add_done_callback(self._agent_done)
            self._tasks.append(task)
        if control_plane is not None:
            self._tasks.append(loop.create_task(self._discover(control_plane, node, agent), name="discovery"))

    async def _discover(self, control: channel_mod.ControlChannel, node: dict, agent: certagent.CertAgent | None):
        if agent is not None:
            await agent.first.wait()  # discovery is authorized by the workload certificate
        self.discovery = discovery.DiscoveryClient(control.host, control.port, node, self.apply_view, control)
        self.admin.register_dump("discovery", self.discovery.dump)
        await self.discovery.run()

    def _agent_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or self.admin.draining:
            return
        log.error("certificate agent stopped, stopping the proxy: %s", task.exception())
        self.exit_code = EXIT_NO_CREDENTIALS
        asyncio.get_running_loop().create_task(self.shutdown())

    def _static_secrets(self) -> dict:
        material = self.runtime.mesh_tls
        return {**certagent.describe(material, time.time()), "source": "static" if material is not None else "none"}

    def _quit(self, query) -> tuple[int, str, bytes]:
        asyncio.get_running_loop().create_task(self.shutdown())
        return 200, "text/plain", b"OK\n"

    async def shutdown(self) -> None:
        if self.admin.draining:
            return
        self.admin.draining = True  # /ready: 503 DRAINING
        for server, _ in self.servers.values():
            server.close()
        self.drained = await drain.drain(self.runtime.connections, self.runtime.counters,
                                         timeout=self.drain_timeout)
        for task in self._tasks:
            task.cancel()
        self.runtime.pools.close()
        for admin_server in (self._admin_server, self._health_server):
            if admin_server is not None:
                admin_server.close()
        self.stopped.set()
