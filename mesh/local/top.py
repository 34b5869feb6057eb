"""`meshctl top`: request rate, error rate and p99 latency per workload, from two scrapes of the sidecars.

Pure part: `rows(before, after, elapsed)` turns the Prometheus text of each workload's proxy, scraped twice
`elapsed` seconds apart, into one Row per workload. A workload is measured where Istio's dashboards measure
it: an app workload by what its own sidecar served (`reporter="destination"`), the ingress gateway by what
its clients saw (`reporter="source"`). The rate is the growth of `istio_requests_total` over `elapsed`, the
error rate the 5xx share of that growth, p99 Prometheus' `histogram_quantile` over the growth of
`istio_request_duration_milliseconds_bucket`, exactly as the promotion gates compute them (mesh.local.gates).
I/O part (thin): `scrape` reads every proxy at once, `watch` samples on an injected clock. mesh.cli_top
presents the rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mesh.local import errors, gates
from mesh.local import plan as plan_mod

INGRESS = plan_mod.GATEWAY_WORKLOAD
QUANTILE = 0.99
MAX_SCRAPERS = 16  # concurrent scrapes: one round stays short, so both ends of a delta are close in time

Texts = Mapping[str, "str | None"]  # workload → its proxy's Prometheus text; None: the scrape failed


@dataclass(frozen=True, slots=True)
class Row:
    workload: str
    reporter: str  # whose view of the requests: "destination" (the workload's sidecar) or "source" (ingress)
    requests: float  # requests counted between the scrapes
    rps: float
    error_rate: float | None  # 5xx share; None without requests
    p99_ms: float | None  # None without requests
    scraped: bool = True  # False: one of the two scrapes failed, the other numbers are 0/None

    def as_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "reporter": self.reporter, "requests": round(self.requests),
                "rps": round(self.rps, 3), "errorRate": _rounded(self.error_rate, 4),
                "p99Ms": _rounded(self.p99_ms, 3), "scraped": self.scraped}


def reporter_of(workload: str) -> str:
    return "source" if workload == INGRESS else "destination"


def rows(before: Texts, after: Texts, elapsed: float) -> list[Row]:
    """One Row per workload of `after`, the ingress gateway first, then by name."""
    if elapsed <= 0:
        raise ValueError(f"elapsed must be positive, got {elapsed!r}")
    out = []
    for workload in sorted(after, key=lambda name: (name != INGRESS, name)):
        reporter = reporter_of(workload)
        old, new = before.get(workload), after[workload]
        if old is None or new is None:
            out.append(Row(workload, reporter, 0.0, 0.0, None, None, scraped=False))
            continue
        total, ok = gates.success(old, new, reporter=reporter)
        p99 = gates.quantile_growth(QUANTILE, old, new, reporter=reporter) if total else math.nan
        out.append(Row(workload, reporter, total, total / elapsed, (total - ok) / total if total else None,
                       None if math.isnan(p99) else p99))
    return out


def as_json(result: Sequence[Row], elapsed: float, stack: str) -> dict[str, Any]:
    return {"stack": stack, "intervalSeconds": round(elapsed, 3), "workloads": [row.as_dict() for row in result]}


def cells(row: Row) -> dict[str, str]:
    """The table's text for one row (mesh.cli_top lays it out)."""
    if not row.scraped:
        return {"workload": row.workload, "reporter": row.reporter, "rps": "-", "5xx": "-", "p99": "-",
                "requests": "unreachable"}
    return {"workload": row.workload, "reporter": row.reporter, "rps": f"{row.rps:.1f}",
            "5xx": "-" if row.error_rate is None else f"{row.error_rate:.1%}",
            "p99": "-" if row.p99_ms is None else f"{row.p99_ms:.1f} ms", "requests": f"{row.requests:.0f}"}


COLUMNS = ("workload", "reporter", "rps", "5xx", "p99", "requests")


# -- I/O ---------------------------------------------------------------------------------------------------


def targets(env: Any) -> list[str]:
    """What `top` watches: every app workload and the ingress gateway."""
    return [*env.workloads(), INGRESS]


def scrape(env: Any, workloads: Sequence[str]) -> dict[str, str | None]:
    """Every proxy's Prometheus text, scraped concurrently; None for a proxy that did not answer."""
    def one(workload: str) -> str | None:
        try:
            return env.stats(workload)
        except errors.WeirError:
            return None

    with ThreadPoolExecutor(max_workers=min(MAX_SCRAPERS, len(workloads) or 1)) as pool:
        return dict(zip(workloads, pool.map(one, workloads), strict=True))


def watch(env: Any, interval: float, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[tuple[float, list[Row]]]:
    """(elapsed, rows) every `interval` seconds, each over the interval just past; endless."""
    workloads = targets(env)
    at, texts = _sample(env, workloads, clock)
    while True:
        sleep(max(0.0, at + interval - clock()))
        now, fresh = _sample(env, workloads, clock)
        yield now - at, rows(texts, fresh, now - at)
        at, texts = now, fresh


def _sample(env: Any, workloads: Sequence[str], clock: Callable[[], float]) -> tuple[float, dict[str, str | None]]:
    start = clock()
    texts = scrape(env, workloads)
    return (start + clock()) / 2, texts  # the round's midpoint: what both ends of a delta are timed at


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
