"""Soak: minutes of open-loop load through the ingress of a running local stack, judged window by window.

`make soak` (or `python -m bench.soak --stack dev --rate 1000 --duration 600`) drives a fixed request
rate (bench.loadclient, the open-loop client of `make bench`) at the stack's ingress while a sampler
thread reads the resident memory and open file descriptors of every process the stack's supervisor runs.
The stack runs as configured: its pinned routing release, mTLS between sidecars (the mesh default) and
telemetry on. The run is cut into windows; the verdict asks what the issue asks:

- zero errors (a non-2xx/3xx answer or no answer at all, in any window after the warm-up);
- a stable p99: the worst window's p99 at most `P99_DRIFT` × the median window's p99;
- RSS growth under `MAX_RSS_GROWTH` for every process, from the end of the first window (interpreter
  and allocator warm-up) to the end of the run;
- no process of the stack gone or restarted meanwhile (its pid stops answering).

The figures go to `bench/results/soak-latest.json` and to stdout as a table; the exit status is 0 only when
every verdict passes. The windows are computed from the one load run afterwards (pure, `windows()`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench import openloop

RESULTS = Path(__file__).resolve().parent / "results" / "soak-latest.json"
P99_DRIFT = 2.0  # worst window p99 ÷ median window p99; beyond that the tail is creeping, not jittering
MAX_RSS_GROWTH = 0.10  # the bound on resident memory growth over the run
WARMUP_S = 10.0  # not judged: pools fill, TLS sessions are made, the allocator finds its size


def windows(schedule: openloop.Schedule, sent: list[float], completed: list[float], ok: bytearray,
            warmup_s: float, window_s: float) -> list[dict]:
    """Latency figures per `window_s` of intended send time, after the warm-up."""
    rate = schedule.rate
    first = min(schedule.count, int(round(warmup_s * rate)))
    size = max(1, int(round(window_s * rate)))
    out = []
    for start in range(first, schedule.count, size):
        end = min(schedule.count, start + size)
        sub = openloop.Schedule(rate, (end - start) / rate, schedule.intended(start))
        sub.count = end - start
        figures = openloop.summarize(sub, sent[start:end], completed[start:end], ok[start:end], warmup_s=0.0)
        figures["from_s"] = round((start - first) / rate, 3)
        out.append(figures)
    return out


def read_process(pid: int) -> tuple[int, int] | None:
    """(RSS in KiB, open file descriptors) of a live process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except (OSError, StopIteration):
        return None
    return rss, fds


class Sampler(threading.Thread):
    """Every `interval` seconds: RSS and fds of each named process (a restarted pid shows as a gap)."""

    def __init__(self, pids: dict[str, int], interval: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pids, self.interval = pids, interval
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            row: dict = {"t": round(time.monotonic() - start, 1)}
            for name, pid in self.pids.items():
                row[name] = read_process(pid)
            self.samples.append(row)
            self.stop.wait(self.interval)


def rss_growth(samples: list[dict], baseline_at: float) -> dict[str, dict]:
    """Per process: RSS (KiB) at the first sample at or after `baseline_at` s, at the end, and the growth."""
    out = {}
    names = [k for k in samples[0] if k != "t"] if samples else []
    for name in names:
        series = [(row["t"], row[name]) for row in samples if row.get(name)]
        after = [(t, v) for t, v in series if t >= baseline_at] or series
        if not after:
            continue
        base, last = after[0][1], series[-1][1]
        out[name] = {"baseline_kib": base[0], "final_kib": last[0], "growth": (last[0] - base[0]) / base[0],
                     "baseline_fds": base[1], "final_fds": last[1]}
    return out


def gone(samples: list[dict]) -> list[str]:
    """Processes that stopped answering after the first sample: exited, killed or restarted (new pid)."""
    names = [k for k in samples[0] if k != "t"] if samples else []
    return sorted(name for name in names if samples[0][name] and any(row.get(name) is None for row in samples))


def verdicts(figures: list[dict], memory: dict[str, dict], lost: list[str] = ()) -> list[dict]:
    errors = sum(w["errors"] for w in figures)
    p99s = [w["p99_ms"] for w in figures if w["completed"]]
    median = statistics.median(p99s) if p99s else float("nan")
    worst = max(p99s) if p99s else float("nan")
    growth = max((m["growth"] for m in memory.values()), default=float("nan"))
    grower = max(memory, key=lambda n: memory[n]["growth"]) if memory else "-"
    return [
        {"check": "errors after warm-up", "value": errors, "limit": "0", "pass": errors == 0},
        {"check": "worst window p99 ÷ median window p99", "value": round(worst / median, 2) if p99s else None,
         "limit": f"≤ {P99_DRIFT}", "pass": bool(p99s) and worst <= P99_DRIFT * median},
        {"check": f"RSS growth, worst process ({grower})", "value": round(growth, 3),
         "limit": f"< {MAX_RSS_GROWTH}", "pass": growth < MAX_RSS_GROWTH},
        {"check": "processes gone or restarted", "value": ", ".join(lost) or "none", "limit": "none",
         "pass": not lost},
    ]


def stack_target(stack_name: str) -> tuple[str, int, dict[str, int]]:
    """The running stack's ingress (host, port) and the pid of each of its processes."""
    from mesh.local import stack, statedir

    settings = stack.load(stack_name)
    doc = statedir.StateDir(settings.state_dir).read_state()
    if not doc or doc.get("supervisor", {}).get("status") != "running":
        raise SystemExit(f"stack {stack_name} is not running: start it with `meshctl up --stack {stack_name}`")
    ingress = urlsplit(doc["urls"]["ingress"])
    pids = {name: row["pid"] for name, row in doc["processes"].items() if row.get("pid")}
    return ingress.hostname, ingress.port, pids


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=600.0, help="judged seconds, after the warm-up")
    parser.add_argument("--path", default="/gateway/health",
                        help="request path (/gateway/books walks the whole chain: gw → books → ratings)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per judged window")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections opened up front")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bench import loadclient

    args = parse_args(argv)
    host, port, pids = stack_target(args.stack)
    request = f"GET {args.path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: weir-soak\r\n\r\n".encode()
    sampler = Sampler(pids, interval=min(10.0, args.window))
    sampler.start()
    began = time.time()
    result = loadclient.run(host, port, request, rate=args.rate, duration=WARMUP_S + args.duration,
                            connections=args.connections)
    sampler.stop.set()
    sampler.join()
    figures = windows(result.schedule, result.sent, result.completed, result.ok, WARMUP_S, args.window)
    memory = rss_growth(sampler.samples, WARMUP_S + args.window)
    checks = verdicts(figures, memory, gone(sampler.samples))
    report = {"stack": args.stack, "path": args.path, "rate_rps": args.rate, "duration_s": args.duration,
              "window_s": args.window, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(began)),
              "timer": result.timer, "connections_opened": result.connections_opened,
              "windows": figures, "memory": memory, "samples": sampler.samples, "verdicts": checks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return 0 if all(c["pass"] for c in checks) else 1


def print_report(report: dict) -> None:
    print(f"soak: {report['rate_rps']:.0f} rps to {report['path']} on stack {report['stack']}, "
          f"{report['duration_s']:.0f} s in {report['window_s']:.0f} s windows")
    print(f"{'from s':>7} {'rps':>7} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>8}")
    for w in report["windows"]:
        print(f"{w['from_s']:>7.0f} {w['achieved_rps']:>7.0f} {w['errors']:>6} {w['p50_ms']:>7.2f} "
              f"{w['p99_ms']:>7.2f} {w['max_ms']:>8.1f}")
    for name, m in sorted(report["memory"].items()):
        print(f"  {name:<24} RSS {m['baseline_kib'] / 1024:6.1f} → {m['final_kib'] / 1024:6.1f} MiB "
              f"({m['growth']:+.1%}), fds {m['baseline_fds']} → {m['final_fds']}")
    for check in report["verdicts"]:
        print(f"  {'PASS' if check['pass'] else 'FAIL'}  {check['check']}: {check['value']} (limit {check['limit']})")


if __name__ == "__main__":
    sys.exit(main())
