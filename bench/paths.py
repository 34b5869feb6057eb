"""The paths `make bench` measures, each started up front and reached at one port: direct, one Weir sidecar
(inbound listener; as deployed, and with `--telemetry off`: routing and metrics only), a sidecar pair (client
outbound listener as an HTTP proxy → server inbound listener; as deployed, metrics only, with issue 3's
resilience settings, with automatic mutual TLS between the two), nginx as a keep-alive reverse proxy, and the
floor under any Python proxy (`bench.floor`: a minimal uvloop + httptools keep-alive proxy). All
reach the same fixed upstream (`start_upstream`: nginx serving the 1 KiB payload). Proxies are pinned to the
proxy CPU, the upstream to the load CPU (`bench.processes.choose_pinning`). `bench.run` measures them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import floor, nginx, processes, sidecar
from mesh.view import security

WARM_S = 2.0  # pair-mtls: closed-loop load before its open-loop runs (bench.run.prepare): its TLS pool
# Interleaved rounds per path and connection count (bench.run.measure_throughput), splitting `--duration`.
# Five, not three: a throughput target is the median of each round's paired ratio, single rounds' ratios
# spread by ±5 % on this VM, and issue 7's target sits about 8 % from its limit (docs/benchmark.md, 2026-11-27
# evening: a three-round run read 0.867× where five-round runs of the same code read 0.91-0.97×).
ROUNDS = 5


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
    rounds: int = ROUNDS


def start_upstream(procs: processes.Processes, workdir: Path, pinning: processes.Pinning) -> int:
    """The fixed upstream every path reaches: nginx serving the 1 KiB payload, on the load CPU; its port."""
    workdir.chmod(0o755)  # nginx workers (user nobody when root) read the payload below it
    root = workdir / "www"
    nginx.write_payload(root)
    port = processes.free_port()
    nginx.start(procs, "upstream", nginx.upstream_conf(workdir, port, root), workdir, port,
                pinning.prefix(pinning.load))
    return port


def start_direct(procs: processes.Processes, ctx: Context) -> Target:
    return Target(ctx.upstream_port)


def start_sidecar(procs: processes.Processes, ctx: Context, name: str = "weir-sidecar",
                  extra: tuple[str, ...] = ()) -> Target:
    pin = ctx.pinning.prefix(ctx.pinning.proxy)
    one = sidecar.start(procs, name, sidecar.inbound_view(ctx.upstream_port), ctx.workdir, pin, extra=extra)
    return Target(one.inbound_port, None, {"sidecar": one.pid})


def start_sidecar_no_telemetry(procs: processes.Processes, ctx: Context) -> Target:
    """One sidecar's inbound listener with its metrics and no access log or tracing (`--telemetry off`), as
    issue 2's targets were set before issue 7's telemetry; nginx-as-proxy has no access log either."""
    return start_sidecar(procs, ctx, "weir-sidecar-no-telemetry", ("--telemetry", "off"))


def start_pair(procs: processes.Processes, ctx: Context, resilience: bool = False,
               extra: tuple[str, ...] = (), name: str = "pair", tree: Path | None = None) -> Target:
    """A client sidecar (outbound) → a server sidecar (inbound) → the upstream; `name` prefixes their
    process names, so that several pairs run side by side (every path of a run, bench.interleaved); `tree`:
    the checkout both run from (`sidecar.start`)."""
    pin = ctx.pinning.prefix(ctx.pinning.proxy)
    server = sidecar.start(procs, f"{name}-server", sidecar.inbound_view(ctx.upstream_port), ctx.workdir, pin,
                           extra=extra, tree=tree)
    view = sidecar.outbound_view(server.inbound_port, resilience=resilience)
    client = sidecar.start(procs, f"{name}-client", view, ctx.workdir, pin, extra=extra, tree=tree)
    return Target(client.outbound_port, sidecar.HOST_HEADER, {"client": client.pid, "server": server.pid})


def start_pair_resilience(procs: processes.Processes, ctx: Context) -> Target:
    """The pair again, the client sidecar's outbound route and cluster carrying issue 3's settings (the server
    sidecar's inbound listener has no route or upstream cluster policy to carry them)."""
    return start_pair(procs, ctx, resilience=True, name="pair-resilience")


def start_pair_no_telemetry(procs: processes.Processes, ctx: Context) -> Target:
    """The pair with `--telemetry off` (metrics only): the base of issue 7's cost of telemetry. `pair` itself
    runs as deployed: JSON access log on stdout, trace headers and spans (Istio's 1 % sampling)."""
    return start_pair(procs, ctx, extra=("--telemetry", "off"), name="pair-no-telemetry")


def start_pair_mtls(procs: processes.Processes, ctx: Context) -> Target:
    """The pair with issue 4's auto mTLS between the sidecars: the server's inbound listener is STRICT, so
    a request that got through crossed mutual TLS; each sidecar has a static identity from a test CA."""
    pin = ctx.pinning.prefix(ctx.pinning.proxy)
    ids = sidecar.write_identities(ctx.workdir, "up", "bench-client")
    server = sidecar.start(procs, "pair-mtls-server", sidecar.inbound_view(ctx.upstream_port, mode=security.STRICT),
                           ctx.workdir, pin, ids["up"])
    view = sidecar.outbound_view(server.inbound_port, peer_identity=ids["up"].spiffe_id)
    client = sidecar.start(procs, "pair-mtls-client", view, ctx.workdir, pin, ids["bench-client"])
    # Its pool is warmed before measuring, as a running mesh's is: a cold pool's handshakes (milliseconds of
    # CPU each) would land in the open-loop figures; they are counted apart (`tls.phases.warmup`).
    return Target(client.outbound_port, sidecar.HOST_HEADER, {"client": client.pid, "server": server.pid},
                  {"client": client.admin_port, "server": server.admin_port}, warm_s=WARM_S)


def start_floor(procs: processes.Processes, ctx: Context) -> Target:
    """The minimal Python proxy (`bench.floor`) on the proxy CPU: what Weir costs above Python's floor."""
    port = processes.free_port()
    proxy = procs.start("floor", ctx.pinning.prefix(ctx.pinning.proxy) + [
        sys.executable, "-m", floor.__name__, "--upstream-port", str(ctx.upstream_port), "--port", str(port)],
        cwd=str(sidecar.REPO_ROOT))
    processes.wait_until(lambda: processes.port_open(port), proxy, "floor")
    return Target(port, None, {"floor": proxy.pid})


def start_nginx_proxy(procs: processes.Processes, ctx: Context) -> Target:
    port = processes.free_port()
    conf = nginx.proxy_conf(ctx.workdir, port, ctx.upstream_port)
    master = nginx.start(procs, "nginx-proxy", conf, ctx.workdir, port, ctx.pinning.prefix(ctx.pinning.proxy))
    workers = processes.children_pids(master.pid)
    return Target(port, None, {"worker": workers[0] if workers else master.pid})


# In the order each wrk round loads them: the paths a target compares run next to each other (the report's
# ratios are per round, `report.throughput_ratio`): nginx and the sidecar, the pair with and without telemetry,
# the pair and its resilience and mTLS variants; the floor is a reference, next to nginx.
SCENARIOS = {"direct": start_direct, "floor": start_floor, "nginx": start_nginx_proxy,
             "sidecar-no-telemetry": start_sidecar_no_telemetry, "sidecar": start_sidecar, "pair-no-telemetry": start_pair_no_telemetry, "pair": start_pair,
             "pair-resilience": start_pair_resilience, "pair-mtls": start_pair_mtls}
