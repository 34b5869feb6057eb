"""The sidecar inbound policy: PeerAuthentication's mode for the app port, turned into how each accepted
connection is secured.

The mode is read per connection from the view in force, so a PeerAuthentication change applies to the
next connection without re-binding; no view yet means PERMISSIVE, and portLevelMtls is looked up by the
workload's port (the inbound cluster's). `decide()` maps the mode to an `inbound_tls` decision:

    DISABLE                                  → PLAIN
    PERMISSIVE or STRICT, no certificate yet → PLAIN (PERMISSIVE) or REFUSE (STRICT)
    PERMISSIVE                               → SNIFF: TLS or plaintext by the first byte
    STRICT                                   → SNIFF_STRICT: TLS, a plaintext first byte is refused

Next: `mesh.proxy.inbound_tls.Listener` calls `decide()` for each connection it accepts and carries it out.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from mesh.proxy import inbound_tls
from mesh.view import security

if TYPE_CHECKING:
    from mesh.proxy.forwarding import Forwarding
    from mesh.proxy.runtime import ProxyRuntime


class PeerAuthentication:
    """The sidecar inbound policy: PeerAuthentication's mode for the app port, read per connection."""

    __slots__ = ("runtime", "forwarding")

    def __init__(self, runtime: ProxyRuntime, forwarding: Forwarding) -> None:
        self.runtime = runtime
        self.forwarding = forwarding

    def mode(self) -> str:
        view = self.runtime.view
        if view is None:
            return security.PERMISSIVE
        mtls = view.spec.security.mtls
        if not mtls.port_modes:
            return mtls.mode
        cluster = view.inbound_cluster  # portLevelMtls names the workload's port: the inbound cluster's
        return mtls.mode_for(cluster.spec.port if cluster is not None else None)

    def decide(self) -> tuple[str, ssl.SSLContext | None, Forwarding, inbound_tls.Check | None]:
        mode = self.mode()
        if mode == security.DISABLE:
            return inbound_tls.PLAIN, None, self.forwarding, None
        mesh = self.runtime.mesh_tls
        ctx = mesh.server if mesh is not None else None
        if ctx is None:  # no workload certificate (yet): plaintext only, and STRICT accepts nothing
            how = inbound_tls.REFUSE if mode == security.STRICT else inbound_tls.PLAIN
            return how, None, self.forwarding, None
        how = inbound_tls.SNIFF_STRICT if mode == security.STRICT else inbound_tls.SNIFF
        return how, ctx, self.forwarding, None
