"""`make bench`: Weir's data-plane cost against a direct call and against nginx, side by side in one run.

One fixed upstream (nginx serving a 1 KiB file with keep-alive) and five paths to it: direct, one Weir
sidecar (inbound listener), a sidecar pair (client outbound listener as an HTTP proxy → server inbound
listener), the same pair with resilience settings on the client's outbound route and cluster (retries,
timeouts, connection-pool limits, outlier detection: `sidecar.outbound_view(resilience=True)`), the same
pair with automatic mutual TLS between the sidecars (`pair-mtls`: server inbound STRICT, static identities
from a test CA; its TLS pool warmed by WARM_S of load first, its cold-start handshakes counted apart), and
nginx as a keep-alive reverse proxy. Each path gets: requests/s at saturation (wrk, 16 and
64 connections, 1 thread), p50/p99 at a fixed rate from the open-loop client (`bench.openloop`), CPU
seconds per 1000 requests and peak RSS of the proxy processes (and for `pair-mtls` the TLS handshakes both
sidecars counted against the requests they served: handshakes are paid per connection, not per request). The proxies are pinned to one CPU and the
load side to the other (`bench.processes.choose_pinning`). `bench.report` prints and saves the result.

    .venv/bin/python -m bench.run [--duration 10] [--quick] [--profile] [--only pair pair-mtls]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import nginx, processes, report, sidecar, wrk  # noqa: E402
from mesh.view import security  # noqa: E402

CONNECTIONS = (16, 64)  # wrk connections at saturation (one wrk thread)
RATE = 1000.0  # open-loop requests per second
OPENLOOP_CONNECTIONS = 32  # keep-alive connections the open-loop client opens up front
WARM_S = 2.0  # pair-mtls: closed-loop load at OPENLOOP_CONNECTIONS before measuring (opens its TLS pool)
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass
class Target:
    port: int
    host_header: str | None = None
    proxies: dict[str, int] = field(default_factory=dict)  # measured processes: name → pid
    admin_ports: dict[str, int] = field(default_factory=dict)  # name → admin port, for TLS counters
    warm_s: float = 0.0  # closed-loop load before measuring: the upstream pool opened as in a running mesh


@dataclass
class Context:
    workdir: Path
    pinning: processes.Pinning
    upstream_port: int
    duration: float
    warmup: float


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


def start_upstream(procs: processes.Processes, workdir: Path, pinning: processes.Pinning) -> int:
    """The fixed upstream every path reaches: nginx serving the 1 KiB payload, on the load CPU; its port."""
    workdir.chmod(0o755)  # nginx workers (user nobody when root) read the payload below it
    root = workdir / "www"
    nginx.write_payload(root)
    port = processes.free_port()
    nginx.start(procs, "upstream", nginx.upstream_conf(workdir, port, root), workdir, port,
                pinning.prefix(pinning.load))
    return port


# -- the paths ------------------------------------------------------------------------------------------
def start_direct(procs: processes.Processes, ctx: Context) -> Target:
    return Target(ctx.upstream_port)


def start_sidecar(procs: processes.Processes, ctx: Context) -> Target:
    pin = ctx.pinning.prefix(ctx.pinning.proxy)
    one = sidecar.start(procs, "weir-sidecar", sidecar.inbound_view(ctx.upstream_port), ctx.workdir, pin)
    return Target(one.inbound_port, None, {"sidecar": one.pid})


def start_pair(procs: processes.Processes, ctx: Context, resilience: bool = False,
               extra: tuple[str, ...] = (), name: str = "weir") -> Target:
    """A client sidecar (outbound) → a server sidecar (inbound) → the upstream; `name` prefixes their
    process names, so that several pairs can run side by side (bench.interleaved)."""
    pin = ctx.pinning.prefix(ctx.pinning.proxy)
    server = sidecar.start(procs, f"{name}-server", sidecar.inbound_view(ctx.upstream_port), ctx.workdir, pin,
                           extra=extra)
    view = sidecar.outbound_view(server.inbound_port, resilience=resilience)
    client = sidecar.start(procs, f"{name}-client", view, ctx.workdir, pin, extra=extra)
    return Target(client.outbound_port, sidecar.HOST_HEADER, {"client": client.pid, "server": server.pid})


def start_pair_resilience(procs: processes.Processes, ctx: Context) -> Target:
    """The pair again, the client sidecar's outbound route and cluster carrying issue 3's settings (the server
    sidecar's inbound listener has no route or upstream cluster policy to carry them)."""
    return start_pair(procs, ctx, resilience=True)


def start_pair_no_telemetry(procs: processes.Processes, ctx: Context) -> Target:
    """The pair with `--telemetry off` (metrics only): the base of issue 7's cost of telemetry. `pair` itself
    runs as deployed: JSON access log on stdout, trace headers and spans (Istio's 1 % sampling)."""
    return start_pair(procs, ctx, extra=("--telemetry", "off"))


def start_pair_mtls(procs: processes.Processes, ctx: Context) -> Target:
    """The pair with issue 4's auto mTLS between the sidecars: the server's inbound listener is STRICT, so
    a request that got through crossed mutual TLS; each sidecar has a static identity from a test CA."""
    pin = ctx.pinning.prefix(ctx.pinning.proxy)
    ids = sidecar.write_identities(ctx.workdir, "up", "bench-client")
    server = sidecar.start(procs, "weir-server", sidecar.inbound_view(ctx.upstream_port, mode=security.STRICT),
                           ctx.workdir, pin, ids["up"])
    view = sidecar.outbound_view(server.inbound_port, peer_identity=ids["up"].spiffe_id)
    client = sidecar.start(procs, "weir-client", view, ctx.workdir, pin, ids["bench-client"])
    # Its pool is warmed before measuring, as a running mesh's is: a cold pool's handshakes (milliseconds of
    # CPU each) would land in the open-loop figures; they are counted apart (`tls.phases.warmup`).
    return Target(client.outbound_port, sidecar.HOST_HEADER, {"client": client.pid, "server": server.pid},
                  {"client": client.admin_port, "server": server.admin_port}, warm_s=WARM_S)


def start_nginx_proxy(procs: processes.Processes, ctx: Context) -> Target:
    port = processes.free_port()
    conf = nginx.proxy_conf(ctx.workdir, port, ctx.upstream_port)
    master = nginx.start(procs, "nginx-proxy", conf, ctx.workdir, port, ctx.pinning.prefix(ctx.pinning.proxy))
    workers = processes.children_pids(master.pid)
    return Target(port, None, {"worker": workers[0] if workers else master.pid})


SCENARIOS = {"direct": start_direct, "sidecar": start_sidecar, "pair": start_pair,
             "pair-no-telemetry": start_pair_no_telemetry, "pair-resilience": start_pair_resilience, "pair-mtls": start_pair_mtls, "nginx": start_nginx_proxy}


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


def run_openloop(target: Target, ctx: Context) -> dict:
    argv = ctx.pinning.prefix(ctx.pinning.load) + [
        sys.executable, "-m", "bench.openloop", "--port", str(target.port), "--path", nginx.PAYLOAD_PATH,
        "--rate", str(RATE), "--duration", str(ctx.duration), "--warmup", str(ctx.warmup),
        "--connections", str(OPENLOOP_CONNECTIONS)]
    if target.host_header:
        argv += ["--host-header", target.host_header]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=ctx.duration + ctx.warmup + 60,
                         cwd=str(sidecar.REPO_ROOT), check=False)
    if out.returncode != 0:
        raise RuntimeError(f"open-loop client failed: {out.stderr[-1500:]}")
    return json.loads(out.stdout)


def measure(target: Target, ctx: Context) -> dict:
    check_path(target)
    result: dict = {"wrk": {}, "busy_before": {}}
    tls_phases: dict[str, dict] = {}
    url = f"http://127.0.0.1:{target.port}{nginx.PAYLOAD_PATH}"
    if target.warm_s:
        tls_before = _tls(target)
        wrk.run(url, OPENLOOP_CONNECTIONS, target.warm_s, host_header=target.host_header,
                pin=ctx.pinning.prefix(ctx.pinning.load))
        tls_phases["warmup"] = _tls_delta(tls_before, _tls(target))
    result["busy_before"]["openloop"] = processes.wait_quiet()
    before, tls_before = _cpu(target), _tls(target)
    result["openloop"] = ol = run_openloop(target, ctx)
    after = _cpu(target)
    tls_phases["openloop"] = _tls_delta(tls_before, _tls(target))
    result["cpu_s_per_1k"] = {n: (after[n] - before[n]) / (ol["sent_total"] / 1000.0) for n in before}
    for c in CONNECTIONS:
        result["busy_before"][f"wrk_c{c}"] = processes.wait_quiet()
        before, tls_before = _cpu(target), _tls(target)
        result["wrk"][str(c)] = wrk.run(url, c, ctx.duration, host_header=target.host_header,
                                        pin=ctx.pinning.prefix(ctx.pinning.load))
        after = _cpu(target)
        tls_phases[f"wrk_c{c}"] = _tls_delta(tls_before, _tls(target))
        result[f"proxy_cpu_util_c{c}"] = {n: (after[n] - before[n]) / ctx.duration for n in before}
    result["peak_rss_mib"] = {n: processes.peak_rss_mib(pid) for n, pid in target.proxies.items()}
    if target.admin_ports:
        result["tls"] = {**tls_counts(target.admin_ports), "phases": tls_phases}
    return result


def _tls(target: Target) -> dict | None:
    return tls_counts(target.admin_ports) if target.admin_ports else None


def _tls_delta(before: dict | None, after: dict | None) -> dict:
    """Handshakes and requests of one phase (the openloop run, one wrk run)."""
    if before is None or after is None:
        return {}
    delta = {k: after[k] - before[k] for k in ("client_handshakes", "server_handshakes", "mtls_requests",
                                                 "plaintext_requests")}
    delta["requests_per_handshake"] = (delta["mtls_requests"] / delta["server_handshakes"]
                                       if delta["server_handshakes"] else None)
    return delta


def tls_counts(admin_ports: dict[str, int]) -> dict:
    """Handshakes each side counted over the whole scenario, and the requests the server answered."""
    texts = {}
    for name, port in admin_ports.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/prometheus", timeout=5) as response:  # noqa: S310
            texts[name] = response.read().decode()
    return report.tls_summary(texts.get("client", ""), texts.get("server", ""))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run and open-loop run")
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
        for name in args.only or SCENARIOS:
            print(f"bench: {report.LABELS[name]} …", file=sys.stderr, flush=True)
            with processes.Processes(workdir) as scenario_procs:
                results[name] = measure(SCENARIOS[name](scenario_procs, ctx), ctx)
        profile = None
        if args.profile:
            from bench import profile as profile_mod

            profile = profile_mod.profile_sidecar(ctx, start_sidecar, procs_dir=workdir)
    targets = report.evaluate(results, CONNECTIONS)
    info = report.machine_info(pinning.describe(), {"wrk": wrk.version(), "nginx": nginx.version()})
    settings = {"duration_s": args.duration, "rate_rps": RATE, "wrk_connections": CONNECTIONS,
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
