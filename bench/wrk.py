"""Saturation throughput with wrk: build the command, run it bounded in time, parse its report.

wrk is closed-loop (each connection waits for its answer), which is right for "how many requests per
second at saturation" and wrong for latency at a given rate: that is `bench.openloop`'s job.
"""

from __future__ import annotations

import re
import shutil
import subprocess

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_PCT = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_TOTAL = re.compile(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m)", re.M)


def binary() -> str:
    return shutil.which("wrk") or "/usr/bin/wrk"


def command(url: str, connections: int, duration_s: float, host_header: str | None = None,
            threads: int = 1) -> list[str]:
    argv = [binary(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency",
            "--timeout", "5s"]
    if host_header:
        argv += ["-H", f"Host: {host_header}"]
    return argv + [url]


def parse(output: str) -> dict:
    """The figures of one wrk report: rps, p50/p99 (ms), total requests, socket errors, non-2xx."""
    rps = _RPS.search(output)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{output[-800:]}")
    pct = {q: float(v) * _UNITS_MS[u] for q, v, u in _PCT.findall(output)}
    sock = _SOCKET.search(output)
    non2xx = _NON2XX.search(output)
    total = _TOTAL.search(output)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)) if total else 0,
        "p50_ms": pct.get("50"),
        "p99_ms": pct.get("99"),
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def run(url: str, connections: int, duration_s: float, *, host_header: str | None = None,
        pin: list[str] | None = None) -> dict:
    argv = (pin or []) + command(url, connections, duration_s, host_header)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    result = parse(out.stdout)
    result["connections"] = connections
    return result


def version() -> str:
    try:
        out = subprocess.run([binary(), "-v"], capture_output=True, text=True, timeout=5)
    except OSError:
        return "missing"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split("Copyright")[0].strip() if first else "unknown"
