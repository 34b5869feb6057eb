"""Upstream keep-alive pools, one per endpoint (address, port).

Decisions are synchronous (httpcore style): `acquire()` returns an idle, live connection or None, which
tells the caller to open a new one; `release()` says whether a finished connection goes back to the idle
set or must be closed. The async connect itself lives in `mesh.proxy.upstream`.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

# Idle keep-alive connections kept per endpoint: bounds sockets held open to one upstream.
MAX_IDLE_PER_ENDPOINT = 128
# Idle connections older than this are closed instead of reused; below aiohttp's 75 s server keep-alive
# and well below Envoy's 1 h default, so we rarely race a server closing an idle socket.
IDLE_TIMEOUT_S = 60.0


class PooledConnection(Protocol):
    idle_since: float

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
    __slots__ = ("key", "idle", "active", "opened", "reused")

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.idle: deque[PooledConnection] = deque()
        self.active = 0
        self.opened = 0
        self.reused = 0

    def acquire(self, now: float, idle_timeout: float = IDLE_TIMEOUT_S) -> PooledConnection | None:
        """Most recently used live idle connection (LIFO keeps the set of warm sockets small); one idle
        for `idle_timeout` (DestinationRule connectionPool.http.idleTimeout) or more is closed instead."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.is_usable() and now - conn.idle_since < idle_timeout:
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
        if reusable and conn.is_usable() and len(self.idle) < MAX_IDLE_PER_ENDPOINT:
            conn.idle_since = now
            self.idle.append(conn)
        else:
            _close(conn)

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
        host, port = self.key
        return (f"<EndpointPool {host}:{port} idle={len(self.idle)} active={self.active} "
                f"opened={self.opened} reused={self.reused}>")


class Pools:
    """All endpoint pools of one proxy."""

    __slots__ = ("by_endpoint",)

    def __init__(self) -> None:
        self.by_endpoint: dict[tuple[str, int], EndpointPool] = {}

    def get(self, key: tuple[str, int]) -> EndpointPool:
        pool = self.by_endpoint.get(key)
        if pool is None:
            pool = self.by_endpoint[key] = EndpointPool(key)
        return pool

    def sweep(self, now: float, keep: frozenset[tuple[str, int]]) -> int:
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
        return closed

    def close(self) -> None:
        for pool in self.by_endpoint.values():
            pool.close()

    def dump(self) -> list[dict]:
        return [
            {"endpoint": f"{h}:{p}", "idle": len(pool.idle), "active": pool.active, "opened": pool.opened,
             "reused": pool.reused}
            for (h, p), pool in sorted(self.by_endpoint.items())
        ]
