"""`make bench`: Weir's data-plane cost against a direct call and against nginx, side by side in one run.

The paths (`bench.paths`: direct, one Weir sidecar as deployed and with metrics only, sidecar pairs as deployed,
metrics only, with resilience settings and with mutual TLS, nginx as a keep-alive reverse proxy) reach one fixed
upstream, nginx serving a 1 KiB file. Each path gets: requests/s at saturation (wrk, 16 and 64 connections,
1 thread), p50/p99 at a fixed rate from the open-loop client (`bench.openloop`), CPU seconds per 1000
requests and peak RSS of the proxy processes (and for `pair-mtls` the TLS handshakes both sidecars counted
against the requests they served: handshakes are paid per connection, not per request). Every path starts
up front; the open-loop runs and the wrk runs go in `--rounds` interleaved rounds (the median round counts),
each wrk run on a pool refilled first (`bench.warm`), so that the ratios "in the same run" survive a shared
VM whose speed drifts by a quarter from one minute to the next. `bench.report` prints and saves the result.

    .venv/bin/python -m bench.run [--duration 10] [--rounds 3] [--quick] [--profile] [--only pair pair-mtls]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import nginx, processes, report, sidecar, warm, wrk  # noqa: E402
from bench.paths import ROUNDS, SCENARIOS, Context, Target, start_sidecar, start_upstream  # noqa: E402

CONNECTIONS = (16, 64)  # wrk connections at saturation (one wrk thread)
RATE = 1000.0  # open-loop requests per second
OPENLOOP_CONNECTIONS = 32  # keep-alive connections the open-loop client opens up front
# A pool is refilled by this many times the clients of the run that follows. The fill's first requests
# overlap only in part (the proxy answers some before the last arrive), so 64 clients left the mTLS pair's
# pool about 50 connections deep: in half of its 64-connection runs 12 to 16 handshakes fell inside the
# measured seconds (ten 3 s runs: 5,600-8,600 requests/s, mean 7,000). Filled by 128, none did (eight runs:
# 7,600-8,300, mean 7,900).
# The pools keep up to 128 idle connections (mesh.proxy.pool.MAX_IDLE_PER_ENDPOINT).
FILL_HEADROOM = 2
# An open-loop round is at least this long: 2,000 requests at RATE, twenty of them above the p99.
MIN_OPENLOOP_S = 2.0
OPENLOOP_COUNTS = ("sent_total", "requests", "completed", "errors", "connections_opened")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
TLS_COUNTS = ("client_handshakes", "server_handshakes", "mtls_requests", "plaintext_requests")


def ensure_tools() -> None:
    """wrk and nginx are Debian packages; install them (as root) only when one is missing."""
    if shutil.which("wrk") and Path(nginx.binary()).exists():
        return
    if os.geteuid() != 0:
        sys.exit("bench: wrk and nginx are needed: apt-get install -y wrk nginx-light (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, timeout=600)
    if subprocess.run(["apt-get", "install", "-y", "wrk", "nginx-light"], env=env, timeout=600).returncode:
        subprocess.run(["apt-get", "install", "-y", "wrk", "nginx"], check=True, env=env, timeout=600)


# -- measuring one path --------------------------------------------------------------------------------------
def check_path(target: Target) -> None:
    """One request must come back 200 with the 1 KiB body, or the figures would measure errors."""
    request = urllib.request.Request(f"http://127.0.0.1:{target.port}{nginx.PAYLOAD_PATH}")
    if target.host_header:
        request.add_header("Host", target.host_header)
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback only
        body = response.read()
    if response.status != 200 or len(body) != nginx.PAYLOAD_BYTES:
        raise RuntimeError(f"port {target.port}: status {response.status}, {len(body)} bytes")


def _cpu(target: Target) -> dict[str, float]:
    return {name: processes.cpu_seconds(pid) for name, pid in target.proxies.items()}


def run_openloop(target: Target, ctx: Context, seconds: float) -> dict:
    argv = ctx.pinning.prefix(ctx.pinning.load) + [
        sys.executable, "-m", "bench.openloop", "--port", str(target.port), "--path", nginx.PAYLOAD_PATH,
        "--rate", str(RATE), "--duration", str(seconds), "--warmup", str(ctx.warmup),
        "--connections", str(OPENLOOP_CONNECTIONS)]
    if target.host_header:
        argv += ["--host-header", target.host_header]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + ctx.warmup + 60,
                         cwd=str(sidecar.REPO_ROOT), check=False)
    if out.returncode != 0:
        raise RuntimeError(f"open-loop client failed: {out.stderr[-1500:]}")
    return json.loads(out.stdout)


def _fill_pool(target: Target, connections: int) -> None:
    """Leave the path's upstream pool as deep as a run with `connections` clients needs (FILL_HEADROOM)."""
    clients = connections * FILL_HEADROOM
    wanted = clients * warm.REQUESTS_EACH
    answered = warm.fill_pool("127.0.0.1", target.port, nginx.PAYLOAD_PATH, host_header=target.host_header,
                              connections=clients)
    if answered < wanted:
        print(f"bench: warning: refilling a pool, {answered} of {wanted} requests answered 200", file=sys.stderr)


def prepare(target: Target, ctx: Context) -> dict:
    """A path's result, begun: it answers 200 with the payload, and (pair-mtls) its TLS pool is warm."""
    check_path(target)
    result: dict = {"wrk": {}, "busy_before": {}, "tls_phases": {}}
    if target.warm_s:
        tls_before = _tls(target)
        wrk.run(_url(target), OPENLOOP_CONNECTIONS, target.warm_s, host_header=target.host_header,
                pin=ctx.pinning.prefix(ctx.pinning.load))
        _fill_pool(target, OPENLOOP_CONNECTIONS)  # what wrk left in flight, its upstream connections closed
        result["tls_phases"]["warmup"] = _tls_delta(tls_before, _tls(target))
    return result


def measure_latency(targets: dict[str, Target], results: dict[str, dict], ctx: Context) -> None:
    """Open loop at RATE (p50/p99 from the intended send times) and CPU per request, in `ctx.rounds` runs
    of `duration / rounds` seconds per path, interleaved as the wrk rounds are: at 1000 requests/s a
    sidecar's CPU per request moved by ±20 % from one 10 s run to the next (five runs side by side:
    0.103-0.148 CPU-s per 1000 requests), more than the changes it has to show. Per path: the median
    round's p50 and p99 and the median round's CPU per proxy; every round's figures are kept."""
    seconds = max(MIN_OPENLOOP_S, ctx.duration / ctx.rounds)
    runs: dict[str, list[dict]] = {name: [] for name in targets}
    for _ in range(ctx.rounds):
        for name, target in targets.items():
            busy = processes.wait_quiet()
            before, tls_before = _cpu(target), _tls(target)
            got = run_openloop(target, ctx, seconds)
            after = _cpu(target)
            runs[name].append({"openloop": got, "busy_before": busy, "tls": _tls_delta(tls_before, _tls(target)),
                               "cpu_s_per_1k": {n: (after[n] - before[n]) / (got["sent_total"] / 1000.0)
                                                for n in before}})
    for name, rounds in runs.items():
        result = results[name]
        result["openloop"] = combine_openloop([r["openloop"] for r in rounds])
        result["busy_before"]["openloop"] = max(r["busy_before"] for r in rounds)
        cpu_rounds = {n: [r["cpu_s_per_1k"][n] for r in rounds] for n in rounds[0]["cpu_s_per_1k"]}
        result["cpu_s_per_1k"] = {n: statistics.median(v) for n, v in cpu_rounds.items()}
        result["cpu_s_per_1k_rounds"] = cpu_rounds
        if rounds[0]["tls"]:
            result["tls_phases"]["openloop"] = _sum_deltas([r["tls"] for r in rounds])


def combine_openloop(rounds: list[dict]) -> dict:
    """Open-loop runs of one path as one: counts summed, every other figure the median over the runs (each
    run's p50 and p99 kept in `p50_ms_rounds` and `p99_ms_rounds`)."""
    combined = {key: (sum(r[key] for r in rounds) if key in OPENLOOP_COUNTS
                      else statistics.median(r[key] for r in rounds) if isinstance(value, (int, float))
                      else value)
                for key, value in rounds[0].items()}
    combined["p50_ms_rounds"] = [r["p50_ms"] for r in rounds]
    combined["p99_ms_rounds"] = [r["p99_ms"] for r in rounds]
    return combined


def measure_throughput(targets: dict[str, Target], results: dict[str, dict], ctx: Context) -> None:
    """wrk at saturation, interleaved: `ctx.rounds` rounds, each loading every path in turn at each
    connection count, so that a drift of the machine's speed (a shared VM's neighbours) falls on every path
    alike instead of on whichever ran during it. Per path and count: the median round's figures, every
    round's requests/s (`rps_rounds`), CPU utilisation and TLS counts over all rounds."""
    seconds = max(1, round(ctx.duration / ctx.rounds))
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(ctx.rounds):
        for c in CONNECTIONS:
            for name, target in targets.items():
                # A path waits a minute between its rounds, and the last wrk run left its pool short by the
                # requests it had in flight: refilled gracefully first (bench.warm), unmeasured, then the
                # machine is let go quiet.
                _fill_pool(target, c)
                busy = processes.wait_quiet()
                before, tls_before = _cpu(target), _tls(target)
                got = wrk.run(_url(target), c, seconds, host_header=target.host_header,
                              pin=ctx.pinning.prefix(ctx.pinning.load))
                after = _cpu(target)
                got.update(busy_before=busy, cpu={n: after[n] - before[n] for n in before},
                           tls=_tls_delta(tls_before, _tls(target)))
                runs.setdefault((name, c), []).append(got)
    for (name, c), rounds in runs.items():
        result = results[name]
        result["wrk"][str(c)] = combine_rounds(rounds)
        result["busy_before"][f"wrk_c{c}"] = max(r["busy_before"] for r in rounds)
        result[f"proxy_cpu_util_c{c}"] = {n: sum(r["cpu"][n] for r in rounds) / (seconds * len(rounds))
                                          for n in rounds[0]["cpu"]}
        if rounds[0]["tls"]:
            result["tls_phases"][f"wrk_c{c}"] = _sum_deltas([r["tls"] for r in rounds])


def combine_rounds(rounds: list[dict]) -> dict:
    """The median round by requests/s (its latency figures with it), with totals over every round."""
    ordered = sorted(rounds, key=lambda r: r["rps"])
    median = ordered[(len(ordered) - 1) // 2]
    keep = ("rps", "p50_ms", "p99_ms", "connections")
    return {**{k: median[k] for k in keep}, "rps_rounds": [r["rps"] for r in rounds],
            "requests": sum(r["requests"] for r in rounds),
            "socket_errors": sum(r["socket_errors"] for r in rounds),
            "non_2xx": sum(r["non_2xx"] for r in rounds)}


def _sum_deltas(deltas: list[dict]) -> dict:
    total = {k: sum(d[k] for d in deltas) for k in TLS_COUNTS}
    total["requests_per_handshake"] = (total["mtls_requests"] / total["server_handshakes"]
                                       if total["server_handshakes"] else None)
    return total


def finish(target: Target, result: dict) -> None:
    """After every load: the proxies' peak RSS, and for mTLS the handshake counts of the whole run."""
    result["peak_rss_mib"] = {n: processes.peak_rss_mib(pid) for n, pid in target.proxies.items()}
    phases = result.pop("tls_phases")
    if target.admin_ports:
        result["tls"] = {**tls_counts(target.admin_ports), "phases": phases}


def _url(target: Target) -> str:
    return f"http://127.0.0.1:{target.port}{nginx.PAYLOAD_PATH}"


def _tls(target: Target) -> dict | None:
    return tls_counts(target.admin_ports) if target.admin_ports else None


def _tls_delta(before: dict | None, after: dict | None) -> dict:
    """Handshakes and requests of one phase (the openloop run, one wrk run)."""
    if before is None or after is None:
        return {}
    return _sum_deltas([{k: after[k] - before[k] for k in TLS_COUNTS}])


def tls_counts(admin_ports: dict[str, int]) -> dict:
    """Handshakes each side counted over the whole scenario, and the requests the server answered."""
    texts = {}
    for name, port in admin_ports.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/prometheus", timeout=5) as response:  # noqa: S310
            texts[name] = response.read().decode()
    return report.tls_summary(texts.get("client", ""), texts.get("server", ""))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of open-loop load per path, and of wrk per path and connection count "
                             "(split into --rounds)")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help="open-loop and wrk load split into this many rounds, interleaved across the paths")
    parser.add_argument("--quick", action="store_true", help="3 s runs (a smoke run, noisy figures)")
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="run only these paths")
    parser.add_argument("--profile", action="store_true", help="then py-spy one sidecar under wrk (top 15)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 3.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ensure_tools()
    pinning = processes.choose_pinning()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="weir-bench-") as tmp, processes.Processes(Path(tmp)) as procs:
        workdir = Path(tmp)
        ctx = Context(workdir, pinning, start_upstream(procs, workdir, pinning), args.duration,
                      0.5 if args.quick else 1.0)
        ctx.rounds = max(1, args.rounds)
        # Every path starts up front and stays up (an idle proxy costs nothing): latency is measured path
        # by path, throughput in rounds across all of them (measure_throughput).
        targets = {name: SCENARIOS[name](procs, ctx) for name in args.only or SCENARIOS}
        for name, target in targets.items():
            results[name] = prepare(target, ctx)
        print(f"bench: open loop at {RATE:,.0f} requests/s, {ctx.rounds} interleaved rounds …", file=sys.stderr,
              flush=True)
        measure_latency(targets, results, ctx)
        print(f"bench: saturation, {ctx.rounds} interleaved rounds …", file=sys.stderr, flush=True)
        measure_throughput(targets, results, ctx)
        for name, target in targets.items():
            finish(target, results[name])
        profile = None
        if args.profile:
            from bench import profile as profile_mod

            profile = profile_mod.profile_sidecar(ctx, start_sidecar, procs_dir=workdir)
    targets = report.evaluate(results, CONNECTIONS)
    info = report.machine_info(pinning.describe(), {"wrk": wrk.version(), "nginx": nginx.version()})
    settings = {"duration_s": args.duration, "wrk_rounds": max(1, args.rounds), "rate_rps": RATE, "wrk_connections": CONNECTIONS,
                "wrk_threads": 1, "openloop_connections": OPENLOOP_CONNECTIONS, "upstream": "nginx, 1 KiB file",
                "quick": args.quick, "pair_resilience": sidecar.resilience_settings(),
                "pair_mtls": {"server_peer_authentication": "STRICT", "client": "auto mTLS (ISTIO_MUTUAL)",
                              "identities": "static, EC P-256, test CA"}}
    report.print_report(results, targets, info, CONNECTIONS, RATE)
    if profile is not None:
        results["profile"] = profile
        profile_mod.print_top(profile)
    report.write_json(args.output, results, targets, info, settings)
    print(f"bench: wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
