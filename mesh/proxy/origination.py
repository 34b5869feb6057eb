"""Client-side TLS of upstream connections: DestinationRule `tls` and Istio's auto mTLS, per endpoint.

`Origination.pool(cluster, endpoint)` decides once per view (per cluster and endpoint) how connections to
the endpoint are secured and returns the keep-alive pool for exactly that: plaintext pools are keyed
(address, port), TLS pools (address, port, tls key), so a plaintext connection never serves an mTLS
target or the reverse, and when a PeerAuthentication change flips an endpoint's `mtls` the next
connection goes to a new pool (the old one's idle sockets are swept with the view). `open()` is the
coroutine `mesh.proxy.forwarding.connect` and `mesh.proxy.mirror` run: TCP connect, TLS handshake, then
the peer check `ssl` cannot make (the SPIFFE ID, or DestinationRule subjectAltNames). Every failure is a
connect failure to the caller (503 UF, retried and reported to outlier detection like one).

Decision per cluster `tls` (Envoy's transport socket, as istiod configures it):
- None (no DestinationRule tls): auto mTLS, ISTIO_MUTUAL when `endpoint.mtls` and this proxy has its
  workload certificate, checking the peer's SPIFFE ID against `endpoint.identity`; else plaintext.
- ISTIO_MUTUAL: the workload certificate; peer IDs `subject_alt_names`, else `endpoint.identity`.
  Both send Istio's SNI, `outbound_.<port>_.<subset>_.<host>` (`istio_sni`), unless the rule sets `sni`;
  the mesh client context never checks host names (the SPIFFE ID is the check), so the SNI is only sent.
- SIMPLE / MUTUAL: a context compiled once per view from the cluster's files (system roots without
  `ca_file`; MUTUAL adds the client certificate); host name checked against `sni` or the endpoint
  address, or the certificate's SANs against `subject_alt_names`; nothing with `insecure_skip_verify`.
- DISABLE: plaintext.
Mesh contexts are read from `runtime.mesh_tls` at each connect: after a rotation the next connection uses
the new certificate and pooled ones live on (no failed request).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from mesh.proxy import pool as pool_mod
from mesh.proxy import tls
from mesh.view import model, security

if TYPE_CHECKING:
    from mesh.proxy.routing import CompiledCluster, CompiledView
    from mesh.proxy.runtime import ProxyRuntime

log = logging.getLogger("weir.proxy.tls")

UNKNOWN = "unknown"


class TlsFailure(ConnectionError):
    """An upstream TLS connection that must not be used: handshake refused, or not the peer we expect."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # the `reason` label of weir_upstream_cx_tls_failures_total


class Origin:
    """How the connections of one pool are secured (None stands for plaintext)."""

    __slots__ = ("mesh", "settings", "expected", "server_hostname", "key")

    def __init__(self, mesh: bool, settings: model.UpstreamTls | None, expected: tuple[str, ...],
                 server_hostname: str) -> None:
        self.mesh = mesh  # ISTIO_MUTUAL: the workload certificate and the mesh root
        self.settings = settings  # SIMPLE / MUTUAL: the cluster's files
        self.expected = expected  # accepted peer SPIFFE IDs (mesh) or SANs (SIMPLE/MUTUAL); empty: any
        self.server_hostname = server_hostname  # SNI ("" sends none)
        # The SNI is in the mesh key: the server may authorize a connection by the SNI it was opened with
        # (its cluster's, subset included), so it must never carry another cluster's requests.
        self.key = ("mtls", expected, server_hostname) if mesh else ("tls", settings)

    def check(self, ssl_object) -> str | None:
        """None when the verified peer is one we accept, else why not."""
        if self.mesh:
            return tls.check_peer(ssl_object, self.expected)
        if self.expected and not self.settings.insecure_skip_verify:
            names = _san_values(ssl_object.getpeercert() or {})
            if not any(_name_matches(want, names) for want in self.expected):
                return f"peer certificate names {sorted(names)} match none of {list(self.expected)}"
        return None

    def peer_principal(self, endpoint: model.Endpoint) -> str:
        """The server identity a mesh connection is verified to have, for destination_principal."""
        if not self.mesh:
            return UNKNOWN
        if len(self.expected) == 1:
            return self.expected[0]
        return endpoint.identity or UNKNOWN


def decide(cluster: model.Cluster, endpoint: model.Endpoint, mesh_ready: bool) -> Origin | None:
    settings = cluster.tls
    if settings is None:  # auto mTLS: only toward a sidecar that accepts it, and once we have a certificate
        if not endpoint.mtls or not mesh_ready:
            return None
        return Origin(True, None, (endpoint.identity,) if endpoint.identity else (), istio_sni(cluster))
    mode = settings.mode
    if mode == security.TLS_ISTIO_MUTUAL:
        expected = settings.subject_alt_names or ((endpoint.identity,) if endpoint.identity else ())
        return Origin(True, None, expected, settings.sni or istio_sni(cluster))
    if mode in (security.TLS_SIMPLE, security.TLS_MUTUAL):
        return Origin(False, settings, settings.subject_alt_names, settings.sni or endpoint.address)
    return None  # DISABLE


def istio_sni(cluster: model.Cluster) -> str:
    """The SNI Istio's sidecars send one another (its BuildDNSSrvSubsetKey): the cluster name with "_."
    for "|", which a host name cannot carry; the server side can match it (`connection.sni`)."""
    return f"outbound_.{cluster.port}_.{cluster.subset}_.{cluster.service}"


def build_context(settings: model.UpstreamTls) -> ssl.SSLContext:
    """The client context of a SIMPLE or MUTUAL cluster; raises OSError / ssl.SSLError on bad files."""
    roots = Path(settings.ca_file).read_bytes() if settings.ca_file else None
    mutual = settings.mode == security.TLS_MUTUAL
    ctx = tls.client_context(roots, settings.cert_file if mutual else None, settings.key_file if mutual else None,
                             check_hostname=not settings.subject_alt_names and not settings.insecure_skip_verify)
    if settings.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def compile_contexts(spec: model.ProxyView) -> dict[model.UpstreamTls, ssl.SSLContext]:
    """Every SIMPLE/MUTUAL context a view needs; a file that cannot be loaded makes the view a ViewError."""
    contexts: dict[model.UpstreamTls, ssl.SSLContext] = {}
    for cluster in spec.clusters:
        settings = cluster.tls
        if settings is None or settings.mode not in (security.TLS_SIMPLE, security.TLS_MUTUAL):
            continue
        if settings not in contexts:
            try:
                contexts[settings] = build_context(settings)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise model.ViewError(f"cluster {cluster.name}: tls {settings.mode}: {exc}") from None
    return contexts


class Origination:
    """The proxy's upstream TLS state: contexts of the view in force and the pool of each target."""

    __slots__ = ("runtime", "contexts", "entries", "mesh_ready")

    def __init__(self, runtime: ProxyRuntime) -> None:
        self.runtime = runtime
        self.contexts: dict[model.UpstreamTls, ssl.SSLContext] = {}
        # (id(compiled cluster), id(endpoint)) → EndpointPool, for the view in force (both objects live
        # as long as it does; cleared with it).
        self.entries: dict[tuple[int, int], pool_mod.EndpointPool] = {}
        self.mesh_ready = False

    def apply(self, spec: model.ProxyView) -> None:
        """A new view: its contexts compiled (ViewError when a file is bad), cached decisions dropped."""
        self.contexts = compile_contexts(spec)
        self.entries.clear()

    def ready(self) -> bool:
        mesh = self.runtime.mesh_tls
        return mesh is not None and mesh.client is not None

    def stale(self) -> bool:
        """Has this proxy's certificate arrived (or gone) since the pools in use were chosen?"""
        mesh = self.runtime.mesh_tls
        return (mesh is not None and mesh.client is not None) is not self.mesh_ready

    def check_ready(self) -> bool:
        """Is the auto mTLS decision in force still right? When this proxy's certificate just arrived (or
        went), it is redone: pools chosen and labels cached so far are dropped (`_refresh`), and False."""
        if self.stale():
            self._refresh()
            return False
        return True

    def target_pool(self, target) -> pool_mod.EndpointPool:
        """The pool of a routing.Target (set on it), and the metric labels that go with it: a target made
        before this proxy's certificate arrived had a plaintext pool, and labels that said so. Once per
        target (targets are kept, `CompiledCluster.targets`), and again when auto mTLS starts (`_dispatch`)."""
        self.check_ready()
        view = self.runtime.view
        if target.cluster is not None and view is not None and target.cluster is not view.inbound_cluster:
            target.peer = self.runtime.source_peer(target.cluster.spec, target.endpoint)
        pool = target.pool = self.pool(target.cluster, target.endpoint)
        return pool

    def pool(self, cluster: CompiledCluster | None, endpoint: model.Endpoint) -> pool_mod.EndpointPool:
        if cluster is None:  # passthrough: the app's own destination, plaintext
            return self.runtime.pools.get((endpoint.address, endpoint.port))
        self.check_ready()
        key = (id(cluster), id(endpoint))
        found = self.entries.get(key)
        if found is None:
            found = self.entries[key] = self._pool(cluster, endpoint, self.mesh_ready)
        return found

    def _refresh(self) -> None:
        """The first certificate arrived (or went): auto mTLS starts now, decisions and labels are redone."""
        self.mesh_ready = self.ready()
        self.entries.clear()
        self.runtime.tls_changed()

    def _pool(self, cluster: CompiledCluster, endpoint: model.Endpoint, ready: bool) -> pool_mod.EndpointPool:
        view = self.runtime.view
        inbound = view is not None and cluster is view.inbound_cluster  # the local app: always plaintext
        origin = None if inbound else decide(cluster.spec, endpoint, ready)
        return self.runtime.pools.get(pool_key(endpoint, origin, cluster.spec.name), origin)

    def keys(self, view: CompiledView) -> frozenset[tuple]:
        """The pool key of every (cluster, endpoint) of `view`: the pools worth keeping."""
        ready = self.ready()
        keys = set()
        for cluster in view.clusters.values():
            inbound = cluster is view.inbound_cluster
            for endpoint in cluster.balancer.endpoints:
                origin = None if inbound else decide(cluster.spec, endpoint, ready)
                keys.add(pool_key(endpoint, origin, cluster.spec.name))
        return frozenset(keys)

    def context(self, origin: Origin) -> ssl.SSLContext:
        if origin.mesh:
            mesh = self.runtime.mesh_tls
            ctx = mesh.client if mesh is not None else None
            if ctx is None:
                raise TlsFailure("no_certificate", "ISTIO_MUTUAL: this proxy has no workload certificate yet")
            return ctx
        ctx = self.contexts.get(origin.settings)
        if ctx is None:  # a view applied without compile_contexts (tests): compile on first use
            ctx = self.contexts[origin.settings] = build_context(origin.settings)
        return ctx

    async def open(self, loop, upstream_pool: pool_mod.EndpointPool, factory, endpoint: model.Endpoint,
                   timeout: float):
        """(transport, protocol) of a new upstream connection, TLS set up and checked when the pool says so."""
        origin = upstream_pool.origin
        if origin is None:
            return await asyncio.wait_for(loop.create_connection(factory, endpoint.address, endpoint.port), timeout)
        counters = self.runtime.counters
        try:
            ctx = self.context(origin)
        except TlsFailure as failure:
            counters.inc("upstream_cx_tls_failures_total", reason=failure.reason)
            raise
        try:
            transport, protocol = await asyncio.wait_for(loop.create_connection(
                factory, endpoint.address, endpoint.port, ssl=ctx, server_hostname=origin.server_hostname,
                ssl_handshake_timeout=timeout), timeout)
        except ssl.SSLError as exc:
            counters.inc("upstream_cx_tls_failures_total", reason="handshake")
            if log.isEnabledFor(logging.DEBUG):
                log.debug("TLS handshake with %s:%d failed: %s", endpoint.address, endpoint.port, exc)
            raise TlsFailure("handshake", str(exc)) from exc
        problem = origin.check(transport.get_extra_info("ssl_object"))
        if problem is not None:
            transport.abort()  # nothing was sent on it
            counters.inc("upstream_cx_tls_failures_total", reason="identity")
            log.warning("upstream %s:%d refused: %s", endpoint.address, endpoint.port, problem)
            raise TlsFailure("identity", problem)
        counters.inc("upstream_cx_tls_handshakes_total")
        return transport, protocol


def pool_key(endpoint: model.Endpoint, origin: Origin | None, cluster: str) -> tuple:
    """Pools are per cluster, as Envoy's: a cluster's maxConnections, maxRequestsPerConnection and
    idleTimeout count and govern its own connections only. A mesh origin's key says it already (the SNI
    names port, subset and service); plaintext and SIMPLE/MUTUAL keys carry the cluster's name (names, not
    objects, so that pools outlive a config push)."""
    if origin is None:
        return (endpoint.address, endpoint.port, cluster)
    if origin.mesh:
        return (endpoint.address, endpoint.port, origin.key)
    return (endpoint.address, endpoint.port, origin.key, cluster)


def _san_values(cert: dict) -> set[str]:
    return {value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "URI", "IP Address")}


def _name_matches(wanted: str, names: set[str]) -> bool:
    if wanted in names:
        return True
    try:  # an IP address compares by value ("::1" and "0:0:0:0:0:0:0:1")
        ip = ipaddress.ip_address(wanted)
        return any(_same_ip(ip, name) for name in names)
    except ValueError:
        pass
    wanted = wanted.lower()
    for name in names:  # a wildcard certificate name covers one label: *.example.com
        name = name.lower()
        if name.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == name[2:]:
            return True
    return wanted in {n.lower() for n in names}


def _same_ip(ip, name: str) -> bool:
    try:
        return ipaddress.ip_address(name) == ip
    except ValueError:
        return False
