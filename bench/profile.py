"""Where one sidecar spends its time under load: py-spy samples it during a wrk run (`--profile`).

py-spy is optional (`.venv/bin/pip install py-spy`; it needs ptrace rights). Its raw output is one line per
distinct stack, `frame;frame;…;leaf count`; a function's self time is the samples where it is the leaf.
Frames are aggregated by function and file (line numbers dropped). Idle samples are dropped (`--idle`
off), so the shares are of busy time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from bench import nginx, processes, wrk

SAMPLE_RATE_HZ = 250
TOP = 15
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    return shutil.which("py-spy") or next(
        (str(p) for p in [Path(sys.executable).parent / "py-spy"] if p.exists()), None)


def self_time(raw: str, top: int = TOP) -> list[dict]:
    """Top functions by self samples from py-spy's raw (collapsed) output."""
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frame = stack.rsplit(";", 1)[-1]
        match = _FRAME.match(frame)
        name = f"{match['func']} ({_short(match['file'])})" if match else frame
        leaf[name] += int(count)
        total += int(count)
    return [{"function": name, "samples": n, "share": n / total} for name, n in leaf.most_common(top)]


def _short(path: str) -> str:
    for marker in ("/mesh/", "/asyncio/", "site-packages/"):
        if marker in path:
            return path[path.index(marker) + 1:] if marker != "site-packages/" else path.split(marker, 1)[1]
    return Path(path).name


def profile_sidecar(ctx, start_sidecar, procs_dir: Path) -> dict | None:
    """Start a fresh sidecar, run wrk (64 connections) through it while py-spy records it."""
    tool = py_spy()
    if tool is None:
        print("bench: --profile needs py-spy (.venv/bin/pip install py-spy)", file=sys.stderr)
        return None
    raw_path = procs_dir / "profile.raw"
    with processes.Processes(procs_dir) as procs:
        target = start_sidecar(procs, ctx, name="profile-sidecar")  # the run's own sidecar is still up
        pid = target.proxies["sidecar"]
        seconds = max(3, round(ctx.duration))
        spy = procs.start("py-spy", ctx.pinning.prefix(ctx.pinning.load) + [
            tool, "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE_HZ), "--duration", str(seconds),
            "--format", "raw", "--output", str(raw_path), "--nonblocking"])
        url = f"http://127.0.0.1:{target.port}{nginx.PAYLOAD_PATH}"
        load = threading.Thread(target=wrk.run, args=(url, 64, seconds + 1),
                                kwargs={"pin": ctx.pinning.prefix(ctx.pinning.load)}, daemon=True)
        load.start()
        try:
            spy.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            pass
        load.join(seconds + 30)
    if not raw_path.exists():
        print(f"bench: py-spy wrote nothing (ptrace rights?), see {procs_dir}/py-spy.log", file=sys.stderr)
        return None
    return {"tool": "py-spy --nonblocking", "rate_hz": SAMPLE_RATE_HZ, "load": "wrk -c64",
            "top_self": self_time(raw_path.read_text())}


def print_top(profile: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"one sidecar under {profile['load']}: top {TOP} functions by self time (busy samples)")
    table.add_column("#", justify="right")
    table.add_column("function (file)")
    table.add_column("self %", justify="right")
    for rank, row in enumerate(profile["top_self"], 1):
        table.add_row(str(rank), row["function"], f"{row['share']:.1%}")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print("Runner.run's self time is uvloop's C loop (epoll, socket reads, callback dispatch); a "
                  "function's self time includes the C calls it makes (transport.write → send()).")
