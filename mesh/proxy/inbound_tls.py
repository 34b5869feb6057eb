"""The accept path of the sidecar inbound and gateway listeners: each connection secured as its listener's
policy decides, per connection (sniffing, handshakes, the bound on pending connections).

`asyncio.create_server` wraps every connection of a port the same way, but a sidecar's inbound port
serves mutual TLS and plaintext side by side (PeerAuthentication PERMISSIVE), and a PeerAuthentication
change must apply to the next connection without re-binding. So these listeners accept themselves, all
in callbacks (no task and no wait per listener, so one slow client never delays the next accept):

    listening socket readable → accept() up to ACCEPT_BATCH → `policy.decide()` for each connection:
      PLAIN   → loop.connect_accepted_socket(factory, sock)
      REFUSE  → closed, counted
      SNIFF   → wait until readable (at most FIRST_BYTE_TIMEOUT_S), peek ONE byte without consuming it:
                0x16 (a TLS handshake record) → TLS; anything else → PLAIN, or closed (SNIFF_STRICT)
      TLS     → connect_accepted_socket(..., ssl=ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)

A TLS connection's protocol is a `SecureDownstream`: before its first request is parsed it records the
client's verified SPIFFE ID and the SNI it sent (`conn.peer_identity`, `conn.sni`, `conn.secure`), and
applies the listener's post-handshake check (gateway: client certificate required, SANs, minimum protocol).
A connection is "pending" from accept until its protocol starts (or it is refused); at MAX_PENDING pending
the listener stops accepting (the kernel backlog holds the rest) until one finishes, so a flood of idle or
slow TLS clients costs bounded memory and never blocks the accept path. Counters:
`weir_downstream_cx_tls_handshakes_total` and `weir_downstream_cx_tls_failures_total{reason}`.
The policies: `mesh.proxy.peer_authentication` (sidecar inbound: which PeerAuthentication mode gives
which decision) and `mesh.proxy.gateway_tls` (gateway); the protocol is `mesh.proxy.downstream`'s.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from mesh.proxy import downstream, tls

if TYPE_CHECKING:
    from mesh.proxy.forwarding import Forwarding
    from mesh.proxy.runtime import ProxyRuntime

log = logging.getLogger("weir.proxy.tls")

# Connections between accept and their protocol (sniffing or handshaking); at the bound accepting pauses.
MAX_PENDING = 1024
# A client that sends nothing this long after connecting: PERMISSIVE serves it as plaintext (Envoy's
# listener_filters_timeout with continue_on_listener_filters_timeout), STRICT closes it.
FIRST_BYTE_TIMEOUT_S = 15.0
# A TLS handshake longer than this is abandoned (slowloris TLS clients hold no slot longer).
HANDSHAKE_TIMEOUT_S = 10.0
# Connections accepted per readiness callback: fairness with the rest of the loop under a connect storm.
ACCEPT_BATCH = 64
# After accept() fails for want of file descriptors, wait this long before trying again (no busy loop).
ACCEPT_RETRY_S = 0.5
TLS_HANDSHAKE_BYTE = b"\x16"

# A policy's `decide()` returns (how, an SSLContext or None, the Forwarding, a Check or None); how is one of:
PLAIN = "plain"
REFUSE = "refuse"
SNIFF = "sniff"  # PERMISSIVE: TLS or plaintext by the first byte
SNIFF_STRICT = "sniff-strict"  # STRICT: TLS, and a plaintext first byte is refused without a handshake
TLS = "tls"

Check = Callable[[ssl.SSLObject], "str | None"]


class SecureDownstream(downstream.DownstreamConnection):
    """A downstream connection over TLS: who the client is, set before its first byte is parsed."""

    __slots__ = ("check",)

    def __init__(self, forwarding: Forwarding, listen_port: int, registry: set, check: Check | None = None) -> None:
        super().__init__(forwarding, listen_port, registry)
        self.check = check  # the listener's post-handshake policy (gateway), None for the mesh

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            problem = self.check(ssl_object) if self.check is not None else None
            if problem is not None:
                self.forwarding.runtime.counters.inc("downstream_cx_tls_failures_total", reason="policy")
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("TLS client refused on port %d: %s", self.listen_port, problem)
                self.closed = True  # not registered, never parsed: abort() stops reading at once
                transport.abort()
                return
            self.secure = True
            self.peer_identity = tls.peer_identity(ssl_object)
            self.sni = tls.sni(ssl_object)
        super().connection_made(transport)


class _Pending:
    __slots__ = ("sock", "how", "context", "forwarding", "check", "timer", "task", "reading")

    def __init__(self, sock: socket.socket, how: str, context, forwarding, check) -> None:
        self.sock = sock
        self.how = how
        self.context = context
        self.forwarding = forwarding
        self.check = check
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None
        self.reading = False


class Listener:
    """One listening socket whose connections are secured per connection by `policy.decide()`.
    Duck-types the `close()` of asyncio's Server for `mesh.proxy.server`."""

    def __init__(self, runtime: ProxyRuntime, port: int, policy, sock: socket.socket) -> None:
        self.runtime = runtime
        self.port = port
        self.policy = policy
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.pending: set[_Pending] = set()
        self.accepting = False
        self.closed = False
        self._resume(None)

    @classmethod
    def bind(cls, runtime: ProxyRuntime, policy, host: str, port: int, backlog: int = 1024) -> Listener:
        """Bind and listen (OSError when the port is taken), then accept."""
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return cls(runtime, port, policy, sock)

    # -- accept --------------------------------------------------------------------------------------------
    def _resume(self, _handle=None) -> None:
        if not self.closed and not self.accepting:
            self.accepting = True
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _pause(self) -> None:
        if self.accepting:
            self.accepting = False
            self.loop.remove_reader(self.sock.fileno())

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            if len(self.pending) >= MAX_PENDING:
                self.runtime.counters.inc("downstream_cx_accept_paused_total")
                self._pause()  # resumed when a pending connection finishes
                return
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS...: back off instead of spinning
                log.warning("accept on port %d failed: %s; retrying in %.1f s", self.port, exc, ACCEPT_RETRY_S)
                self._pause()
                self.loop.call_later(ACCEPT_RETRY_S, self._resume)
                return
            sock.setblocking(False)
            self._handle(sock)

    def _handle(self, sock: socket.socket) -> None:
        how, context, forwarding, check = self.policy.decide()
        if how == REFUSE:
            self.runtime.counters.inc("downstream_cx_tls_failures_total", reason="no_certificate")
            sock.close()
            return
        pending = _Pending(sock, how, context, forwarding, check)
        self.pending.add(pending)
        if how == SNIFF or how == SNIFF_STRICT:
            self._sniff(pending)
        else:
            self._start(pending, how == TLS)

    # -- sniffing ------------------------------------------------------------------------------------------
    def _sniff(self, pending: _Pending) -> None:
        try:
            first = pending.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            if not pending.reading:  # nothing yet: wait for the first byte, bounded
                pending.reading = True
                self.loop.add_reader(pending.sock.fileno(), self._readable, pending)
                pending.timer = self.loop.call_later(FIRST_BYTE_TIMEOUT_S, self._first_byte_timeout, pending)
            return
        except OSError:
            self._drop(pending)
            return
        self._stop_waiting(pending)
        if not first:  # closed before saying anything
            self._drop(pending)
        elif first == TLS_HANDSHAKE_BYTE:
            self._start(pending, True)
        elif pending.how == SNIFF_STRICT:
            self.runtime.counters.inc("downstream_cx_tls_failures_total", reason="plaintext")
            self._drop(pending)
        else:
            self._start(pending, False)

    def _readable(self, pending: _Pending) -> None:
        self._sniff(pending)

    def _stop_waiting(self, pending: _Pending) -> None:
        if pending.reading:
            pending.reading = False
            self.loop.remove_reader(pending.sock.fileno())
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None

    def _first_byte_timeout(self, pending: _Pending) -> None:
        pending.timer = None
        self._stop_waiting(pending)
        if pending.how == SNIFF_STRICT:
            self.runtime.counters.inc("downstream_cx_tls_failures_total", reason="timeout")
            self._drop(pending)
        else:
            self._start(pending, False)

    # -- hand-off ------------------------------------------------------------------------------------------
    def _start(self, pending: _Pending, secure: bool) -> None:
        runtime, port, forwarding = self.runtime, self.port, pending.forwarding
        if secure:
            check = pending.check
            coro = self.loop.connect_accepted_socket(
                lambda: SecureDownstream(forwarding, port, runtime.connections, check), pending.sock,
                ssl=pending.context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        else:
            coro = self.loop.connect_accepted_socket(
                lambda: downstream.DownstreamConnection(forwarding, port, runtime.connections), pending.sock)
        pending.task = task = self.loop.create_task(coro)
        task.add_done_callback(lambda done: self._started(pending, done, secure))

    def _started(self, pending: _Pending, task: asyncio.Task, secure: bool) -> None:
        self._finished(pending)
        if task.cancelled():
            _close(pending.sock)
            return
        exc = task.exception()
        if exc is None:
            if secure:
                self.runtime.counters.inc("downstream_cx_tls_handshakes_total")
            return
        _close(pending.sock)  # when the transport never took it
        if secure:
            self.runtime.counters.inc("downstream_cx_tls_failures_total", reason="handshake")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("connection on port %d failed before its first request: %r", self.port, exc)

    def _drop(self, pending: _Pending) -> None:
        self._stop_waiting(pending)
        _close(pending.sock)
        self._finished(pending)

    def _finished(self, pending: _Pending) -> None:
        self.pending.discard(pending)
        if not self.accepting and not self.closed and len(self.pending) < MAX_PENDING:
            self._resume()

    # -- shutdown ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop accepting and drop the connections not yet handed to a protocol (those drain on their own)."""
        if self.closed:
            return
        self._pause()
        self.closed = True
        self.sock.close()
        for pending in list(self.pending):
            if pending.task is not None:
                pending.task.cancel()
            else:
                self._drop(pending)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("accepting" if self.accepting else "paused")
        return f"<Listener :{self.port} {state} pending={len(self.pending)}>"


def _close(sock: socket.socket) -> None:
    """Close a socket no transport owns (a transport that took it detaches or closes it: fileno -1)."""
    if sock.fileno() >= 0:
        sock.close()
