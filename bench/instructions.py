"""User-space instructions per request of one real sidecar, counted by valgrind: a figure that does not drift.

On a shared VM the same sidecar's throughput moves by a quarter from one minute to the next, so an effect of
a few per cent (what a telemetry feature costs, what an optimisation saves) drowns in `make bench` and
takes `bench.interleaved` many cycles to see. Here each variant's sidecar runs under callgrind
(`--tool=callgrind`: every instruction executed in user space, the Python interpreter, uvloop, httptools,
libc, the access log's writer thread, counted exactly), serves WARMUP requests and is dumped
(`callgrind_control --dump`, which starts the counters again), serves `--requests` more over four
keep-alive connections, waits one telemetry flush, and is dumped again: the second dump is the figure. Two runs of one variant agree within about 1 %.

What it leaves out: the kernel (sockets, wakeups: about half a sidecar's CPU on loopback, and the same for
every variant that makes the same system calls), caches and the VM's noise. So it compares variants of the
proxy's own code; `make bench` stays the judge of throughput. Under valgrind a sidecar runs about fifty times
slower: a variant takes about a minute.

    .venv/bin/python -m bench.instructions                                   # telemetry off / on / tracing only
    .venv/bin/python -m bench.instructions --traceparent --variant off='--telemetry off' --variant on=
    .venv/bin/python -m bench.instructions --requests 5000 --variant base= --variant other='--some-flag'
    .venv/bin/python -m bench.instructions --variant base@/tmp/weir-base= --variant change=   # two checkouts

`--traceparent` sends each request with a caller's `traceparent` and `x-request-id`, as a client sidecar
does: the server side of a pair (a joined trace) instead of a new root at an edge.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import interleaved, nginx, paths, processes, sidecar  # noqa: E402
from mesh.view import wire  # noqa: E402

WARMUP = 400  # requests before counting: pools open, caches filled, code paths specialised
CONNECTIONS = 4
READY_TIMEOUT_S = 300.0  # a proxy starting under valgrind
SETTLE_S = 1.0  # after the last request: one telemetry flush (FLUSH_S 0.1) formats and writes its lines
_TOTALS = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def dumped_instructions(dump: bytes) -> int:
    """The instruction total of one callgrind dump (its `summary:` line, or `totals:`)."""
    found = _TOTALS.search(dump)
    if found is None:
        raise ValueError("not a callgrind dump: no summary or totals line")
    return int(found.group(1))


class Requests:
    """GET the 1 KiB payload through the sidecar's inbound listener, round robin over keep-alive connections."""

    def __init__(self, port: int, traceparent: bool, seed: int = 1) -> None:
        self._connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=120) for _ in range(CONNECTIONS)]
        self._turn = itertools.cycle(self._connections)
        self._traceparent = traceparent
        self._rng = random.Random(seed)
        self._ids = itertools.count()

    def headers(self) -> dict[str, str]:
        head = {"Host": sidecar.HOST_HEADER, "User-Agent": "bench-instructions"}
        if self._traceparent:
            head["traceparent"] = f"00-{self._rng.getrandbits(128):032x}-{self._rng.getrandbits(64):016x}-00"
            head["x-request-id"] = f"bench-{next(self._ids):012x}"
        return head

    def send(self, count: int) -> None:
        for _ in range(count):
            connection = next(self._turn)
            connection.request("GET", nginx.PAYLOAD_PATH, headers=self.headers())
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"the sidecar answered {response.status}")

    def close(self) -> None:
        for connection in self._connections:
            connection.close()


def count(procs: processes.Processes, workdir: Path, upstream_port: int, name: str, flags: tuple[str, ...],
          requests: int, traceparent: bool, tree: Path | None = None) -> float:
    """Instructions per request of one sidecar variant (run from the checkout `tree`, by default this one)."""
    view = workdir / f"{name}.view.json"
    view.write_text(json.dumps(wire.to_dict(sidecar.inbound_view(upstream_port))))
    inbound, outbound, admin = (processes.free_port() for _ in range(3))
    out = workdir / f"{name}.callgrind"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
            *sidecar.command(name, view, inbound, outbound, admin, extra=flags)]
    proc = procs.start(name, argv, cwd=str(tree or sidecar.REPO_ROOT))
    try:
        processes.wait_until(lambda: processes.http_ok(f"http://127.0.0.1:{admin}/ready"), proc,
                             f"{name} under valgrind", timeout=READY_TIMEOUT_S)
    except RuntimeError as exc:  # the log is in a directory removed on exit: its tail goes with the error
        raise RuntimeError(f"{exc}: {(workdir / f'{name}.log').read_text()[-2000:]}") from exc
    client = Requests(inbound, traceparent)
    try:
        client.send(WARMUP)
        time.sleep(SETTLE_S)
        _dump(proc.pid, Path(f"{out}.{proc.pid}.1"))  # a dump starts the counters again: the warmup stays in it
        client.send(requests)
        time.sleep(SETTLE_S)
        measured = _dump(proc.pid, Path(f"{out}.{proc.pid}.2"))
    finally:
        client.close()
        procs.stop(proc)
    return dumped_instructions(measured.read_bytes()) / requests


def _dump(pid: int, expected: Path) -> Path:
    """Ask callgrind for a dump and wait for its file: callgrind_control exits 0 even when it found no
    callgrind process, so the file is the only proof."""
    done = subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, text=True, timeout=60)
    deadline = time.monotonic() + 30
    while not (expected.exists() and _TOTALS.search(expected.read_bytes())):  # complete with its totals line
        if time.monotonic() > deadline:
            raise RuntimeError(f"callgrind wrote no {expected.name}: {done.stdout.strip() or done.stderr.strip()}")
        time.sleep(0.2)
    return expected


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", type=interleaved.parse_variant, default=None,
                        help="NAME=FLAGS for the sidecar, NAME@DIR=FLAGS to run another checkout's "
                             "(repeatable; the first is the base); "
                             "default: telemetry off, on, tracing only")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--traceparent", action="store_true",
                        help="requests carry a caller's traceparent and x-request-id (a pair's server side)")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("bench.instructions needs valgrind: apt-get install -y valgrind")
    variants = interleaved.variants_of(args.variant)
    pinning = processes.choose_pinning()
    with tempfile.TemporaryDirectory(prefix="weir-instructions-") as tmp, processes.Processes(Path(tmp)) as procs:
        workdir = Path(tmp)
        upstream = paths.start_upstream(procs, workdir, pinning)
        base = None
        for name, flags, tree in variants:
            per_request = count(procs, workdir, upstream, name, flags, args.requests, args.traceparent, tree)
            base = base or per_request
            print(f"{name:16s} {per_request:9,.0f} instructions/request ({per_request / base:.3f}× {variants[0].name})",
                  flush=True)


if __name__ == "__main__":
    main()
