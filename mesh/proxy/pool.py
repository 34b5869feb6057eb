"""Upstream keep-alive pools, one per endpoint and way of securing it: (address, port) for plaintext,
(address, port, tls key) for TLS (`mesh.proxy.origination` decides which), so pools never mix the two.

Decisions are synchronous (httpcore style): `acquire()` returns an idle, live connection or None, which
tells the caller to open a new one; `release()` says whether a finished connection goes back to the idle
set or must be closed. The async connect itself lives in `mesh.proxy.upstream`.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

# Idle keep-alive connections kept per endpoint: bounds sockets held open to one upstream.
MAX_IDLE_PER_ENDPOINT = 128
# TLS connects (handshakes) in flight per pool; past it a request waits for the first connection that
# frees up or opens. A handshake costs milliseconds of CPU: a burst of requests to a cold pool must not
# turn into a storm of handshakes that starves the requests themselves.
MAX_TLS_CONNECTING = 8
# Waiters queued before the queue is compacted (requests that gave up are dropped); live ones are bounded
# by the downstream connections.
WAITING_COMPACT_AT = 1024
# Idle connections older than this are closed instead of reused; below aiohttp's 75 s server keep-alive
# and well below Envoy's 1 h default, so we rarely race a server closing an idle socket.
IDLE_TIMEOUT_S = 60.0


class PooledConnection(Protocol):
    idle_since: float
    opened_at: float

    def is_usable(self) -> bool: ...

    def close(self) -> None: ...


def _close(conn: PooledConnection) -> None:
    conn.close()
    _closed(conn)


def _closed(conn: PooledConnection) -> None:
    """A connection is gone: the cluster that opened it may now open another (circuit breaking)."""
    cluster = getattr(conn, "cluster", None)
    if cluster is not None:
        cluster.connection_closed()


class EndpointPool:
    __slots__ = ("key", "idle", "active", "opened", "reused", "origin", "connecting", "waiting", "retired")

    def __init__(self, key: tuple, origin=None) -> None:
        self.key = key
        self.origin = origin  # mesh.proxy.origination.Origin of its connections; None: plaintext
        self.connecting = 0  # TLS connects in flight (capped at MAX_TLS_CONNECTING)
        self.waiting: deque = deque()  # (forwarding, exchange, try number) waiting for a TLS connection
        self.idle: deque[PooledConnection] = deque()
        self.active = 0
        self.opened = 0
        self.reused = 0
        # Forgotten by `Pools.sweep` (its endpoint left the view): a request that still holds it (queued, in a
        # retry's backoff) may open one more connection here, which is closed when released, never pooled
        # where no sweep would reach it.
        self.retired = False

    def acquire(self, now: float, idle_timeout: float = IDLE_TIMEOUT_S,
                max_age: float | None = None) -> PooledConnection | None:
        """Most recently used live idle connection (LIFO keeps the set of warm sockets small); one idle
        for `idle_timeout` (DestinationRule connectionPool.http.idleTimeout) or more, or open for `max_age`
        (tcp.maxConnectionDuration) or more, is closed instead."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.is_usable() and now - conn.idle_since < idle_timeout and (
                    max_age is None or now - conn.opened_at < max_age):
                self.active += 1
                self.reused += 1
                return conn
            _close(conn)
        return None

    def opening(self) -> None:
        self.active += 1
        self.opened += 1

    def release(self, conn: PooledConnection, reusable: bool, now: float) -> None:
        self.active -= 1
        if reusable and not self.retired and conn.is_usable() and len(self.idle) < MAX_IDLE_PER_ENDPOINT:
            conn.idle_since = now
            self.idle.append(conn)
        else:
            _close(conn)

    def may_connect(self) -> bool:
        """May a request open a new connection now, or must it wait for one (TLS connects at the cap)?"""
        return self.origin is None or self.connecting < MAX_TLS_CONNECTING

    def wait(self, forwarding, exchange) -> None:
        if len(self.waiting) >= WAITING_COMPACT_AT:
            self.waiting = deque(w for w in self.waiting if not w[1].done and w[1].tries == w[2])
        self.waiting.append((forwarding, exchange, exchange.tries))

    def wake(self) -> None:
        """A connection came free or a TLS connect ended: the oldest live waiter tries again (soon)."""
        while self.waiting:
            forwarding, exchange, tries = self.waiting.popleft()
            if not exchange.done and exchange.tries == tries:
                forwarding.loop.call_soon(forwarding.dispatch_pending, exchange, tries)
                return

    def discard(self, conn: PooledConnection) -> None:
        """An idle connection went away on its own (server closed it)."""
        try:
            self.idle.remove(conn)
        except ValueError:
            return
        _closed(conn)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()

    def __repr__(self) -> str:
        host, port = self.key[:2]
        tls = " tls" if self.origin is not None else ""
        return (f"<EndpointPool {host}:{port}{tls} idle={len(self.idle)} active={self.active} "
                f"opened={self.opened} reused={self.reused}>")


class Pools:
    """All endpoint pools of one proxy."""

    __slots__ = ("by_endpoint",)

    def __init__(self) -> None:
        self.by_endpoint: dict[tuple, EndpointPool] = {}

    def get(self, key: tuple, origin=None) -> EndpointPool:
        """The pool of `key`; `origin` (how its connections are secured) is part of the key's meaning."""
        pool = self.by_endpoint.get(key)
        if pool is None:
            pool = self.by_endpoint[key] = EndpointPool(key, origin)
        return pool

    def sweep(self, now: float, keep: frozenset[tuple]) -> int:
        """Close idle connections past the idle timeout, and every idle one to an endpoint not in `keep`
        (gone from the view, or a passthrough host); forget pools left with nothing. Returns closed count."""
        closed = 0
        for key, pool in list(self.by_endpoint.items()):
            wanted = key in keep
            for conn in list(pool.idle):
                if not wanted or now - conn.idle_since >= IDLE_TIMEOUT_S or not conn.is_usable():
                    pool.idle.remove(conn)
                    _close(conn)
                    closed += 1
            if not wanted and not pool.idle and pool.active == 0:
                del self.by_endpoint[key]
                pool.retired = True
        return closed

    def close(self) -> None:
        for pool in self.by_endpoint.values():
            pool.close()

    def dump(self) -> list[dict]:
        return [
            {"endpoint": f"{key[0]}:{key[1]}", "tls": pool.origin is not None,
             "sni": pool.origin.server_hostname if pool.origin is not None else None, "idle": len(pool.idle),
             "active": pool.active, "opened": pool.opened, "reused": pool.reused}
            for key, pool in sorted(self.by_endpoint.items(), key=lambda item: str(item[0]))
        ]
