"""The dashboard's scraper: every connected proxy's `/stats/prometheus`, every SCRAPE_INTERVAL, while
someone looks at the dashboard.

A background task of its own, never on the push path: each round fetches with bounded concurrency and a
short timeout, parses (mesh.control.dashboard.metrics) and keeps the last HISTORY scrapes per proxy; a
proxy that failed keeps its older scrapes, one that left is forgotten. `windows()` hands the oldest and
newest scrape of each proxy to mesh.control.dashboard.graph. With nobody looking for IDLE_AFTER seconds
it stops scraping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from mesh.control.dashboard import metrics

log = logging.getLogger(__name__)

SCRAPE_INTERVAL = 1.5  # seconds between rounds
SCRAPE_TIMEOUT = 1.0  # seconds for one proxy's answer: a stuck proxy costs one round at most
MAX_CONCURRENT_SCRAPES = 8  # sockets open at once: bounds the control plane's load on a large mesh
MAX_SCRAPE_BYTES = 4 * 1024 * 1024  # a larger answer is cut off and the round skips that proxy
HISTORY = 4  # scrapes kept per proxy: rates are over the last 3 intervals (~4.5 s)
IDLE_AFTER = 60.0  # seconds without a viewer after which scraping pauses


class Target(NamedTuple):
    proxy_id: str
    url: str  # the proxy's /stats/prometheus


Fetch = Callable[[str], Awaitable[str]]


class Scraper:
    def __init__(self, targets: Callable[[], list[Target]], fetch: Fetch,
                 clock: Callable[[], float] = time.monotonic, interval: float = SCRAPE_INTERVAL) -> None:
        self.targets = targets
        self.fetch = fetch
        self.clock = clock
        self.interval = interval
        self.history: dict[str, deque[metrics.Scrape]] = {}
        self.last_viewed = float("-inf")
        self.rounds = 0
        self.failures = 0
        self._wanted = asyncio.Event()
        self._bound = asyncio.Semaphore(MAX_CONCURRENT_SCRAPES)

    def viewed(self) -> None:
        """A viewer asked for the graph: keep (or start) scraping."""
        self.last_viewed = self.clock()
        self._wanted.set()

    def windows(self) -> dict[str, tuple[metrics.Scrape | None, metrics.Scrape]]:
        return {pid: (h[0] if len(h) > 1 else None, h[-1]) for pid, h in self.history.items() if h}

    async def scrape_once(self) -> None:
        targets = self.targets()
        known = {t.proxy_id for t in targets}
        for gone in [pid for pid in self.history if pid not in known]:
            del self.history[gone]
        await asyncio.gather(*(self._scrape(t) for t in targets))
        self.rounds += 1

    async def _scrape(self, target: Target) -> None:
        async with self._bound:
            try:
                text = await asyncio.wait_for(self.fetch(target.url), SCRAPE_TIMEOUT)
            except (TimeoutError, OSError, ValueError) as exc:
                self.failures += 1
                log.debug("scrape of %s failed: %s", target.proxy_id, exc)
                return
        scrape = metrics.parse(text, self.clock())
        self.history.setdefault(target.proxy_id, deque(maxlen=HISTORY)).append(scrape)

    async def run(self) -> None:
        while True:
            if self.clock() - self.last_viewed > IDLE_AFTER:
                self._wanted.clear()
                await self._wanted.wait()
                self.history.clear()  # scrapes from before the pause would average over it
            try:
                await self.scrape_once()
            except Exception:  # a bug here must not end the dashboard
                log.exception("dashboard scrape round failed")
            await asyncio.sleep(self.interval)

    def __repr__(self) -> str:
        return f"<Scraper proxies={len(self.history)} rounds={self.rounds} failures={self.failures}>"
