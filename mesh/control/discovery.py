"""Per-proxy xDS bookkeeping: the current view of each connected proxy, what was sent, ACKed, NACKed.

Synchronous and clock-injected, so the long-poll decisions are tested without sockets;
`mesh.control.push` refreshes the views after a new snapshot, `mesh.control.server` moves the bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mesh.control import node as node_mod
from mesh.view import model, wire

log = logging.getLogger(__name__)

DISCONNECTED_AFTER = 45.0  # seconds without a request before a proxy shows as disconnected
FORGET_AFTER = 600.0  # seconds after which a disconnected proxy leaves the status table

SYNCED = "SYNCED"
STALE = "STALE"
NACKED = "NACKED"
DISCONNECTED = "DISCONNECTED"

Builder = Callable[[Any, node_mod.Node], model.ProxyView]


@dataclass(frozen=True, slots=True)
class Nack:
    version: str  # the version the proxy refused ("" when the nonce was not ours)
    error: str
    at: float


class ProxyState:
    """One proxy: its node, its current view, and the xDS exchange so far."""

    __slots__ = (
        "node", "view", "version", "revision", "sent_version", "sent_nonce", "acked_version",
        "last_nack", "connected_since", "last_seen", "polling", "_wakeup",
    )

    def __init__(self, node: node_mod.Node, now: float) -> None:
        self.node = node
        self.view: model.ProxyView | None = None
        self.version = ""  # wire.version_of(view)
        self.revision = -1  # snapshot revision the view was built from
        self.sent_version = ""
        self.sent_nonce = ""
        self.acked_version = ""
        self.last_nack: Nack | None = None
        self.connected_since = now
        self.last_seen = now
        self.polling = 0  # long polls in flight
        self._wakeup = asyncio.Event()

    @property
    def wakeup(self) -> asyncio.Event:
        """Set (and replaced) whenever the view changes; a long poll waits on the one it saw."""
        return self._wakeup

    def _wake(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def __repr__(self) -> str:
        return (
            f"<ProxyState {self.node.id} version={self.version} sent={self.sent_version} "
            f"acked={self.acked_version} nack={self.last_nack is not None}>"
        )


class Discovery:
    """All proxies by id, and the snapshot their views come from."""

    def __init__(self, snapshot: Any, build: Builder, clock: Callable[[], float] = time.time) -> None:
        self.snapshot = snapshot
        self.build = build
        self.clock = clock
        self.proxies: dict[str, ProxyState] = {}
        self._nonces = itertools.count(1)
        self.closing = False

    # -- views -----------------------------------------------------------------------------------------

    def refresh(self, proxy_id: str) -> bool:
        """Rebuild one proxy's view from the current snapshot; True when its version changed."""
        state = self.proxies.get(proxy_id)
        if state is None or state.revision == self.snapshot.revision:
            return False
        view = self.build(self.snapshot, state.node)
        state.revision = self.snapshot.revision
        if view == state.view:
            return False  # equality is the change detector: no push
        state.view = view
        state.version = wire.version_of(view)
        state._wake()
        return True

    def connected(self) -> list[str]:
        now = self.clock()
        return sorted(pid for pid, s in self.proxies.items() if _is_connected(s, now))

    # -- requests --------------------------------------------------------------------------------------

    def on_request(self, node: node_mod.Node, version_info: str, nonce: str, error_detail: Any) -> ProxyState:
        """Register the proxy and record the ACK/NACK that this request carries."""
        now = self.clock()
        state = self.proxies.get(node.id)
        if state is None or not _is_connected(state, now):
            fresh = ProxyState(node, now)
            if state is not None:  # keep what the proxy last did, it may show in status
                fresh.last_nack = state.last_nack
            state = self.proxies[node.id] = fresh
            log.info("proxy %s connected (%s)", node.id, node.role)
        if state.node != node:
            state.node = node
            state.revision = -1  # metadata changed (labels, ports): rebuild
        state.last_seen = now
        if version_info:
            state.acked_version = version_info  # by definition the last version the proxy accepted
        if error_detail:
            refused = state.sent_version if nonce and nonce == state.sent_nonce else ""
            state.last_nack = Nack(refused, _error_text(error_detail), now)
            log.warning("proxy %s NACKed version %s: %s", node.id, refused or "?", state.last_nack.error)
        self.refresh(node.id)
        return state

    def should_send(self, state: ProxyState, version_info: str) -> bool:
        if self.closing or state.view is None or state.version == version_info:
            return False
        # A version the proxy refused is not sent again; the next different view will be.
        return not (state.last_nack is not None and state.last_nack.version == state.version)

    def mark_sent(self, state: ProxyState) -> dict[str, Any]:
        nonce = f"{next(self._nonces):x}-{state.version[:8]}"
        state.sent_version = state.version
        state.sent_nonce = nonce
        assert state.view is not None
        return {"version_info": state.version, "nonce": nonce, "view": wire.to_dict(state.view)}

    def forget_stale(self) -> None:
        now = self.clock()
        for pid in [p for p, s in self.proxies.items() if s.polling == 0 and now - s.last_seen > FORGET_AFTER]:
            del self.proxies[pid]

    def close(self) -> None:
        """Shutdown: wake every long poll so it answers at once."""
        self.closing = True
        for state in self.proxies.values():
            state._wake()

    # -- status ----------------------------------------------------------------------------------------

    def status_of(self, state: ProxyState) -> str:
        if not _is_connected(state, self.clock()):
            return DISCONNECTED
        if state.version and state.acked_version == state.version:
            return SYNCED  # what the proxy runs is what it should run, whatever it refused before
        nack = state.last_nack
        if nack is not None and nack.version and nack.version == state.version:
            return NACKED
        return STALE

    def rows(self) -> list[dict[str, Any]]:
        """`GET /v1/proxies`: one row per proxy, sorted by id."""
        now = self.clock()
        out = []
        for pid in sorted(self.proxies):
            s = self.proxies[pid]
            nack = s.last_nack
            out.append(
                {
                    "proxy": pid,
                    "role": s.node.role,
                    "namespace": s.node.namespace,
                    "workload": s.node.workload,
                    "version": s.version,
                    "sent": s.sent_version,
                    "acked": s.acked_version,
                    "status": self.status_of(s),
                    "connected": _is_connected(s, now),
                    "lastNack": None
                    if nack is None
                    else {"version": nack.version, "error": nack.error, "at": _iso(nack.at)},
                    "connectedSince": _iso(s.connected_since),
                    "lastSeen": _iso(s.last_seen),
                    "lastSeenSecondsAgo": round(max(0.0, now - s.last_seen), 3),
                }
            )
        return out


def _is_connected(state: ProxyState, now: float) -> bool:
    return state.polling > 0 or now - state.last_seen <= DISCONNECTED_AFTER


def _error_text(detail: Any) -> str:
    if isinstance(detail, dict):
        return str(detail.get("message") or detail)
    return str(detail)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
