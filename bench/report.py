"""The bench report: targets checked against the figures, a rich table, and `bench/results/latest.json`.

`evaluate` is pure (figures in, pass/fail rows out); the bench reports and never fails the build.
Scenario names: `direct` (client → upstream), `sidecar` (→ one Weir sidecar's inbound listener),
`pair` (→ client sidecar outbound → server sidecar inbound), `sidecar-no-telemetry` and `pair-no-telemetry`
(the same with `--telemetry off`: metrics, no access log or tracing), `pair-resilience` (the pair, the
client's outbound route and cluster holding retries, timeouts, pool limits and outlier detection), `pair-mtls`
(the pair with auto mutual TLS between the sidecars, server STRICT), `nginx` (→ nginx as a reverse proxy).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mesh.control.exposition import samples

# The targets of the project's issue 2.
MIN_THROUGHPUT_VS_NGINX = 0.6  # one sidecar, requests/s ÷ nginx-as-proxy's
MAX_ADDED_P50_MS = 0.3  # sidecar pair minus direct, at the fixed rate
MAX_ADDED_P99_MS = 0.8
MAX_CPU_S_PER_1K = 0.12  # per sidecar
MAX_RSS_MIB = 40.0  # per sidecar
# The target of issue 3: resilience settings cost the pair at most 10%.
MIN_RESILIENCE_THROUGHPUT = 0.9  # pair-resilience requests/s ÷ pair's
MAX_RESILIENCE_P50 = 1.1  # pair-resilience p50 ÷ pair's, at the fixed rate
# Issue 4: mutual TLS between the sidecars. Handshakes are per connection, so at keep-alive the cost is
# the record layer: encrypt + decrypt once on each sidecar per request and per response.
MIN_MTLS_THROUGHPUT = 0.7  # pair-mtls requests/s ÷ pair's
MAX_MTLS_ADDED_P50_MS = 0.3  # pair-mtls p50 − pair's, at the fixed rate (issue 4)
MIN_REQUESTS_PER_HANDSHAKE = 100.0  # keep-alive reuse: far more requests than handshakes
# Issue 7: telemetry on costs at most 10 % "of sidecar throughput": one sidecar as deployed (an inbound
# listener starting a trace per request) ÷ the same with `--telemetry off`. The pair's ratio is reported
# beside it, not judged: both of its sidecars share the proxy CPU here, and telemetry's extra work per loop
# iteration makes them preempt each other more, a cost of this bench's placement rather than of a sidecar
# (in a cluster a call's two sidecars run in different pods; docs/benchmark.md, session 18: 0.93-0.95x
# with a CPU each against about 0.90x on one).
MIN_TELEMETRY_THROUGHPUT = 0.9  # requests/s as deployed ÷ with `--telemetry off`

LABELS = {
    "direct": "direct (client → upstream)",
    "floor": "minimal Python proxy (the floor)",
    "sidecar": "one Weir sidecar (inbound)",
    "sidecar-no-telemetry": "one Weir sidecar, telemetry off (inbound)",
    "pair": "Weir sidecar pair (out → in)",
    "pair-no-telemetry": "Weir pair, telemetry off (out → in)",
    "pair-resilience": "Weir pair + resilience (out → in)",
    "pair-mtls": "Weir pair, mTLS between (out → in)",
    "nginx": "nginx as reverse proxy",
}


def _get(results: dict, *path: str) -> float:
    node = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return math.nan
        node = node[key]
    return node if isinstance(node, (int, float)) else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def throughput_ratio(results: dict, path: str, baseline: str, connections: int) -> float:
    """`path`'s requests/s ÷ `baseline`'s at `connections`: the median over the interleaved rounds of each
    round's ratio, where both have every round (`rps_rounds`), else the ratio of the median rounds.

    Why paired: the VM's speed drifts between rounds far more than within one (in one run every path lost
    30–60 % in the same round), and both paths of a ratio run seconds apart in each round (`bench.paths`
    orders them so), so a round's ratio cancels the drift that the ratio of two medians, possibly taken from
    different rounds, keeps."""
    mine = results.get(path, {}).get("wrk", {}).get(str(connections), {}).get("rps_rounds")
    theirs = results.get(baseline, {}).get("wrk", {}).get(str(connections), {}).get("rps_rounds")
    if mine and theirs and len(mine) == len(theirs) and all(theirs):
        return statistics.median(a / b for a, b in zip(mine, theirs))
    return _ratio(_get(results, path, "wrk", str(connections), "rps"),
                  _get(results, baseline, "wrk", str(connections), "rps"))


# Issue 2's targets are for a sidecar "with routing and metrics on", written before issue 7 added the access
# log and tracing (and bounded their cost): the `-no-telemetry` paths (`--telemetry off` keeps the metrics),
# as nginx-as-proxy runs without an access log. The pair's client sidecar routes (outbound route table); the
# one-sidecar path is an inbound listener, which has no route table to match. The same targets are also
# reported for the sidecars as deployed, access log and tracing on.
ISSUE_2_CONFIGURATIONS = (("sidecar-no-telemetry", "pair-no-telemetry", "metrics, no access log or tracing"),
                          ("sidecar", "pair", "as deployed: + access log, tracing"))


def _issue_2_rows(results: dict, connections: tuple[int, ...], one: str, pair: str, config: str) -> list[dict]:
    rows = []
    for c in connections:
        ratio = throughput_ratio(results, one, "nginx", c)
        rows.append({"target": f"one sidecar throughput ÷ nginx-as-proxy, {c} conns ({config})", "value": ratio,
                     "limit": f"≥ {MIN_THROUGHPUT_VS_NGINX}", "pass": ratio >= MIN_THROUGHPUT_VS_NGINX})
    for q, limit in (("p50", MAX_ADDED_P50_MS), ("p99", MAX_ADDED_P99_MS)):
        added = _get(results, pair, "openloop", f"{q}_ms") - _get(results, "direct", "openloop", f"{q}_ms")
        rows.append({"target": f"sidecar pair added latency {q} (ms) ({config})", "value": added,
                     "limit": f"≤ {limit}", "pass": added <= limit})
    sidecars = [results.get(name, {}) for name in (one, pair)]
    cpu = max((v for r in sidecars for v in r.get("cpu_s_per_1k", {}).values()), default=math.nan)
    rss = max((v for r in sidecars for v in r.get("peak_rss_mib", {}).values()), default=math.nan)
    rows.append({"target": f"CPU-s per 1000 requests per sidecar, worst ({config})", "value": cpu,
                 "limit": f"≤ {MAX_CPU_S_PER_1K}", "pass": cpu <= MAX_CPU_S_PER_1K})
    rows.append({"target": f"peak RSS per sidecar, MiB, worst ({config})", "value": rss,
                 "limit": f"≤ {MAX_RSS_MIB:.0f}", "pass": rss <= MAX_RSS_MIB})
    return rows


def evaluate(results: dict, connections: tuple[int, ...]) -> list[dict]:
    """One row per target: what was measured, the limit, and whether it passes (NaN never passes); a figure
    reported beside a target without being one has `pass` None."""
    rows = []
    for one, pair, config in ISSUE_2_CONFIGURATIONS:
        rows += _issue_2_rows(results, connections, one, pair, config)
    for c in connections:
        ratio = throughput_ratio(results, "pair-resilience", "pair", c)
        rows.append({"target": f"pair with resilience ÷ pair without, throughput, {c} conns", "value": ratio,
                     "limit": f"≥ {MIN_RESILIENCE_THROUGHPUT}", "pass": ratio >= MIN_RESILIENCE_THROUGHPUT})
    ratio = _ratio(_get(results, "pair-resilience", "openloop", "p50_ms"),
                   _get(results, "pair", "openloop", "p50_ms"))
    rows.append({"target": "pair with resilience ÷ pair without, p50 at the fixed rate", "value": ratio,
                 "limit": f"≤ {MAX_RESILIENCE_P50}", "pass": ratio <= MAX_RESILIENCE_P50})
    for c in connections:
        ratio = throughput_ratio(results, "pair-mtls", "pair", c)
        rows.append({"target": f"pair with mTLS ÷ plaintext pair, throughput, {c} conns", "value": ratio,
                     "limit": f"≥ {MIN_MTLS_THROUGHPUT}", "pass": ratio >= MIN_MTLS_THROUGHPUT})
    added = _get(results, "pair-mtls", "openloop", "p50_ms") - _get(results, "pair", "openloop", "p50_ms")
    rows.append({"target": "pair with mTLS: p50 added over the plaintext pair (ms)", "value": added,
                 "limit": f"≤ {MAX_MTLS_ADDED_P50_MS}", "pass": added <= MAX_MTLS_ADDED_P50_MS})
    for c in connections:
        ratio = throughput_ratio(results, "sidecar", "sidecar-no-telemetry", c)
        rows.append({"target": f"one sidecar with telemetry ÷ telemetry off, throughput, {c} conns", "value": ratio,
                     "limit": f"≥ {MIN_TELEMETRY_THROUGHPUT}", "pass": ratio >= MIN_TELEMETRY_THROUGHPUT})
    for c in connections:  # reported, not a target (MIN_TELEMETRY_THROUGHPUT's comment)
        rows.append({"target": f"pair with telemetry ÷ telemetry off, throughput, {c} conns (both sidecars on "
                               "one CPU)", "value": throughput_ratio(results, "pair", "pair-no-telemetry", c),
                     "limit": "reported", "pass": None})
    reuse = _get(results, "pair-mtls", "tls", "requests_per_handshake")
    rows.append({"target": "pair with mTLS: requests per TLS handshake", "value": reuse,
                 "limit": f"≥ {MIN_REQUESTS_PER_HANDSHAKE:.0f}", "pass": reuse >= MIN_REQUESTS_PER_HANDSHAKE})
    return rows


def tls_summary(client_text: str, server_text: str) -> dict:
    """From both sidecars' /stats/prometheus: handshakes on each side, failures, requests served."""
    client, server = samples(client_text), samples(server_text)

    def total(scrape: list, name: str, policy: str | None = None) -> float:
        return sum(value for metric, labels, value in scrape if metric == name
                   and (policy is None or labels.get("connection_security_policy") == policy))

    requests = total(server, "istio_requests_total", "mutual_tls")
    server_handshakes = total(server, "weir_downstream_cx_tls_handshakes_total")
    return {"client_handshakes": total(client, "weir_upstream_cx_tls_handshakes_total"),
            "server_handshakes": server_handshakes, "mtls_requests": requests,
            "client_tls_failures": total(client, "weir_upstream_cx_tls_failures_total"),
            "server_tls_failures": total(server, "weir_downstream_cx_tls_failures_total"),
            "plaintext_requests": total(server, "istio_requests_total", "none"),
            "requests_per_handshake": requests / server_handshakes if server_handshakes else math.nan}


def _fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _per_proxy(values: dict[str, float], digits: int) -> str:
    return " / ".join(_fmt(v, digits) for v in values.values()) or "–"


def table(results: dict, connections: tuple[int, ...], rate: float) -> Table:
    t = Table(title=f"Weir data-plane bench (1 KiB upstream; latency open-loop at {rate:.0f} rps; "
                    "rps: the median round, ×nginx: the median of each round's ratio)")
    t.add_column("path")
    for c in connections:
        t.add_column(f"rps c{c} (×nginx)", justify="right")
    for col in ("p50 ms (+vs direct)", "p99 ms (+vs direct)", "achieved rps / err", "CPU-s/1k req",
                "peak RSS MiB", "proxy CPU at c64"):
        t.add_column(col, justify="right")
    for name, label in LABELS.items():
        r = results.get(name)
        if r is None:
            continue
        cells = [label]
        for c in connections:
            rps = _get(r, "wrk", str(c), "rps")
            cells.append(f"{_fmt(rps, 0)} ({_fmt(throughput_ratio(results, name, 'nginx', c))}×)")
        for q in ("p50", "p99"):
            value = _get(r, "openloop", f"{q}_ms")
            added = value - _get(results, "direct", "openloop", f"{q}_ms")
            cells.append(_fmt(value, 3) + ("" if name == "direct" or math.isnan(added) else f" ({added:+.3f})"))
        ol = r.get("openloop", {})
        cells += [f"{_fmt(ol.get('achieved_rps', math.nan), 0)} / {ol.get('errors', '–')}",
                  _per_proxy(r.get("cpu_s_per_1k", {}), 3), _per_proxy(r.get("peak_rss_mib", {}), 1),
                  " / ".join(f"{v:.0%}" for v in r.get("proxy_cpu_util_c64", {}).values())]
        t.add_row(*cells)
    return t


def targets_table(rows: list[dict]) -> Table:
    t = Table(title="Targets (issues 2, 3, 4 and 7) — reported, never fails the build")
    for col in ("target", "measured", "limit", "result"):
        t.add_column(col)
    for row in rows:
        mark = "[dim]info[/]" if row["pass"] is None else "[green]PASS[/]" if row["pass"] else "[red]FAIL[/]"
        t.add_row(row["target"], _fmt(row["value"], 3), row["limit"], mark)
    return t


def print_report(results: dict, targets: list[dict], info: dict, connections: tuple[int, ...],
                 rate: float, console: Console | None = None) -> None:
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    console.print(table(results, connections, rate))
    console.print(targets_table(targets))
    console.print(f"pinning: {info['pinning']}")
    tls = results.get("pair-mtls", {}).get("tls")
    if tls:
        console.print(f"pair-mtls: {tls['mtls_requests']:,.0f} requests over mutual TLS, "
                      f"{tls['plaintext_requests']:,.0f} plaintext; handshakes client {tls['client_handshakes']:,.0f} / "
                      f"server {tls['server_handshakes']:,.0f} ({_fmt(tls['requests_per_handshake'], 0)} requests "
                      f"per handshake); TLS failures {tls['client_tls_failures']:,.0f} / {tls['server_tls_failures']:,.0f}")
        phases = ", ".join(f"{phase} {d['server_handshakes']:,.0f} for {d['mtls_requests']:,.0f} requests"
                           for phase, d in tls.get("phases", {}).items() if d)
        if phases:  # a handshake is a new upstream connection: a cold or growing pool, never a request
            console.print(f"  handshakes per phase: {phases}")
    load = info.get("load_average", (0.0,))[0]
    if load > 0.5:
        console.print(f"[yellow]note: 1-min load average was {load:.2f} at the start: other work shares the CPUs[/]")
    busy = [v for r in results.values() if isinstance(r, dict) for v in r.get("busy_before", {}).values()]
    if busy and max(busy) > 0.10:
        console.print(f"[yellow]note: other work kept up to {max(busy):.0%} of the CPUs busy right before a "
                      "measurement (waited up to 30 s for quiet): figures are noisy[/]")
    console.print("per-proxy columns: pairs = client sidecar / server sidecar; nginx = its one worker. "
                  "CPU-s/1k req from /proc utime+stime, p50/p99 and CPU the median open-loop round; RSS = VmHWM.")


def machine_info(pinning: str, tool_versions: dict[str, str]) -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "kernel": platform.release(), **tool_versions}
    for dist in ("uvloop", "httptools", "weir"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {"nproc": os.cpu_count(), "cpu_model": model, "versions": versions, "pinning": pinning,
            "load_average": os.getloadavg(), "when": datetime.now(UTC).isoformat(timespec="seconds")}


def write_json(path: Path, results: dict, targets: list[dict], info: dict, settings: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": info, "settings": settings, "results": results, "targets": targets}
    path.write_text(json.dumps(_no_nan(doc), indent=2, default=str) + "\n")


def _no_nan(node):
    """NaN (a figure that could not be measured) becomes null: strict JSON has no NaN."""
    if isinstance(node, dict):
        return {k: _no_nan(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_no_nan(v) for v in node]
    return None if isinstance(node, float) and math.isnan(node) else node
