"""Interleaved A/B of sidecar pairs: what a flag costs, measured on a machine whose speed drifts.

On a shared 2-core VM the same pair serves 5,000 requests/s one minute and 7,500 the next, so two paths
measured one after the other (as `make bench` does) can differ by more than the effect looked for. Here
every variant's pair is started up front, side by side (idle pairs cost nothing), and wrk loads them in
turn, `--cycles` times for `--seconds` each; the verdict is each variant's median over the cycles, next to
the first variant's. CPU per request is read from /proc over each load, summed over the pair's two sidecars
and halved (per sidecar), with the part spent in the kernel shown apart: a variant can cost system time
too, not only the proxy's own instructions (telemetry adds 1–5 µs of it per request on 15–18).

    .venv/bin/python -m bench.interleaved                      # telemetry off / on / tracing only
    .venv/bin/python -m bench.interleaved --variant off='--telemetry off' --variant on= --cycles 20

A variant may also run another checkout's proxy: `NAME@DIR=FLAGS`. This compares two revisions of the code,
the same way (a change measured against the commit before it, in one run):

    git worktree add /tmp/weir-base HEAD~1
    .venv/bin/python -m bench.interleaved --variant base@/tmp/weir-base= --variant change=

Next to the ratio of the medians, each variant's paired ratio is printed: the median over cycles of its
requests/s ÷ the first variant's in the same cycle (`report.throughput_ratio`'s estimator), which a
minute where the VM slowed down moves less. An A/A run (one tree under two names) shows the noise floor:
on the development VM 1–5 % over a few cycles.

Pinning as `make bench`: the sidecars on one CPU, wrk and the upstream (nginx, 1 KiB) on the other.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

if __package__ in (None, ""):  # run as `python bench/interleaved.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import nginx, paths, processes, sidecar, wrk  # noqa: E402

CONNECTIONS = 64


class Variant(NamedTuple):
    name: str
    flags: tuple[str, ...] = ()  # the proxy's command-line flags
    tree: Path | None = None  # the checkout its proxies run from; None: this one


TELEMETRY_VARIANTS = (Variant("telemetry-off", ("--telemetry", "off")), Variant("telemetry-on"),
                      Variant("tracing-only", ("--access-log", "off")))


@dataclass
class Samples:
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # CPU µs per request per sidecar
    system_us: list[float] = field(default_factory=list)  # of which in the kernel (stime)


def summarize(samples: dict[str, Samples]) -> list[dict]:
    """Median requests/s and CPU per request of each variant, its ratio to the first variant's median, and
    its paired ratio: the median of its per-cycle ratios to the first variant (cycles of one run align)."""
    rows, base, base_rps = [], None, None
    for name, got in samples.items():
        rps = statistics.median(got.rps)
        if base is None:
            base, base_rps = rps, got.rps
        paired = [mine / theirs for mine, theirs in zip(got.rps, base_rps) if theirs]
        rows.append({"variant": name, "rps_median": rps, "ratio": rps / base if base else None,
                     "paired_ratio": statistics.median(paired) if paired else None,
                     "cpu_us_per_request_median": statistics.median(got.cpu_us),
                     "system_us_per_request_median": statistics.median(got.system_us),
                     "rps_min": min(got.rps), "rps_max": max(got.rps), "cycles": len(got.rps)})
    return rows


def parse_variant(text: str) -> Variant:
    """`name=flags` (shell words), or `name@dir=flags` for a proxy run from the checkout at `dir`."""
    label, sep, flags = text.partition("=")
    name, at, tree = label.partition("@")
    if not sep or not name or (at and not tree):
        raise argparse.ArgumentTypeError(f"expected NAME=FLAGS or NAME@DIR=FLAGS, got {text!r}")
    if at and not (Path(tree) / "mesh" / "proxy" / "__main__.py").is_file():
        raise argparse.ArgumentTypeError(f"{tree}: not a Weir checkout (no mesh/proxy/__main__.py)")
    return Variant(name, tuple(shlex.split(flags)), Path(tree).resolve() if at else None)


def variants_of(given: list[Variant] | None) -> tuple[Variant, ...]:
    """The variants asked for (each name once), or the telemetry ones."""
    if not given:
        return TELEMETRY_VARIANTS
    names = [v.name for v in given]
    if len(set(names)) != len(names):
        raise SystemExit(f"each variant needs its own name: {', '.join(names)}")
    return tuple(given)


def run(variants: tuple[Variant, ...], cycles: int, seconds: float) -> dict[str, Samples]:
    pinning = processes.choose_pinning()
    load = pinning.prefix(pinning.load)
    samples = {v.name: Samples() for v in variants}
    with tempfile.TemporaryDirectory(prefix="weir-ab-") as tmp, processes.Processes(Path(tmp)) as procs:
        workdir = Path(tmp)
        ctx = paths.Context(workdir, pinning, paths.start_upstream(procs, workdir, pinning), seconds, 0.0)
        pairs = {}
        for name, flags, tree in variants:
            target = paths.start_pair(procs, ctx, extra=flags, name=name, tree=tree)
            pairs[name] = (f"http://127.0.0.1:{target.port}{nginx.PAYLOAD_PATH}", list(target.proxies.values()))
        for url, _ in pairs.values():  # warm each pool and allocator once
            wrk.run(url, CONNECTIONS, 1, host_header=sidecar.HOST_HEADER, pin=load)
        for _ in range(cycles):
            for name, (url, pids) in pairs.items():
                before = [processes.cpu_times(pid) for pid in pids]
                result = wrk.run(url, CONNECTIONS, seconds, host_header=sidecar.HOST_HEADER, pin=load)
                after = [processes.cpu_times(pid) for pid in pids]
                user = sum(a[0] - b[0] for a, b in zip(after, before))
                system = sum(a[1] - b[1] for a, b in zip(after, before))
                per_request = 1e6 / max(1, result["requests"]) / len(pids)
                samples[name].rps.append(result["rps"])
                samples[name].cpu_us.append((user + system) * per_request)
                samples[name].system_us.append(system * per_request)
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.interleaved", description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", type=parse_variant, default=None,
                        help="NAME=FLAGS for the pair's two sidecars, NAME@DIR=FLAGS to run them from another "
                             "checkout (repeatable; the first is the base); default: telemetry off, on, tracing only")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0, help="wrk run per variant per cycle")
    args = parser.parse_args(argv)
    rows = summarize(run(variants_of(args.variant), args.cycles, args.seconds))
    for row in rows:
        print(f"{row['variant']:16s} rps median {row['rps_median']:8,.0f} ({row['ratio']:.3f}× "
              f"{rows[0]['variant']}, paired {row['paired_ratio']:.3f}×; {row['rps_min']:,.0f}–{row['rps_max']:,.0f})  "
              f"CPU {row['cpu_us_per_request_median']:.1f} µs/request/sidecar "
              f"(system {row['system_us_per_request_median']:.1f})")


if __name__ == "__main__":
    main()
