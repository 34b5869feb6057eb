"""`python -m mesh.proxy`: run a sidecar or gateway proxy (see docs/architecture.md for the flags).

With `--control-plane HOST:PORT` (the TLS mesh channel) the proxy trusts only the root in `--ca-file`,
gets its workload certificate from the control plane's CA (`mesh.proxy.certagent`; credential: the
`WEIR_BOOTSTRAP_TOKEN` environment variable locally, `--token-file` on Kubernetes) and keeps its key and
certificate in `--cert-dir` (0700). With `--bootstrap VIEW.json` it runs without a control plane;
`--tls-cert/--tls-key/--tls-roots` then give it a fixed identity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile

from mesh.proxy import (
    certagent,
    channel,
    heap,
    log_writer,
    otlp,
    request_limits,
    runtime,
    server,
    telemetry,
    tls,
    tracing,
)
from mesh.view import security, wire


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mesh.proxy", description="Weir sidecar / gateway proxy")
    _identity_flags(parser.add_argument_group("identity and certificates"))
    _listener_flags(parser.add_argument_group("listeners and ports"))
    _telemetry_flags(parser.add_argument_group("telemetry"))
    _limit_flags(parser.add_argument_group("limits, timeouts and lifecycle"))
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    problem = _problem(args)
    if problem:
        parser.error(problem)
    return args


def _identity_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--role", choices=("sidecar", "gateway"), default="sidecar")
    group.add_argument("--id", required=True, help="proxy id, e.g. books-v1.bookinfo")
    group.add_argument("--namespace", default="default")
    group.add_argument("--workload", required=True)
    group.add_argument("--labels", default="", help="k=v,k=v")
    group.add_argument("--service-account", default="default")
    group.add_argument("--control-plane", default=None, help="host:port of the control plane's mesh channel (TLS)")
    group.add_argument("--ca-file", default=None, help="the mesh root certificate: the only trust for the control plane")
    group.add_argument("--control-plane-sni", default=None,
                       help="name the control plane's certificate must carry (default: the host of --control-plane)")
    group.add_argument("--cert-dir", default=None, help="where the key and certificate are kept (default: a temp dir)")
    group.add_argument("--token-file", default=os.environ.get(certagent.TOKEN_FILE_ENV) or None,
                       help="a service-account token for CSRs, re-read each time (env WEIR_TOKEN_FILE)")
    group.add_argument("--cert-ttl", type=float, default=None, help="requested certificate lifetime, seconds")
    group.add_argument("--cert-grace-ratio", type=float, default=certagent.GRACE_RATIO,
                       help="renew when this fraction of the lifetime is left (default 0.5)")
    group.add_argument("--tls-cert", default=None, help="static identity: certificate chain (PEM)")
    group.add_argument("--tls-key", default=None, help="static identity: its key (PEM)")
    group.add_argument("--tls-roots", default=None, help="static identity: trusted mesh roots (PEM)")
    group.add_argument("--bootstrap", default=None, help="a static view (JSON file) instead of a control plane")


def _listener_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--bind", default="127.0.0.1", help="the outbound listener (the app's HTTP_PROXY)")
    group.add_argument("--inbound-bind", default=None,
                       help="inbound and gateway listeners and --health-port (default --bind; 0.0.0.0 in a pod)")
    group.add_argument("--health-port", type=int, default=None,
                       help="serve only GET /healthz/ready (the admin's ready latch) and GET "
                            "/stats/prometheus on --inbound-bind")
    group.add_argument("--address", default=None,
                       help="this proxy's address on the pod network (node metadata: the control plane's "
                            "dashboard scrapes the health port's /stats/prometheus there)")
    group.add_argument("--inbound-port", type=int, default=15006)
    group.add_argument("--outbound-port", type=int, default=15001)
    group.add_argument("--app-port", type=int, default=9080)
    group.add_argument("--admin-port", type=int, default=15000)
    group.add_argument("--port-map", default="", help="gateway: server port=local port, e.g. 80=8080")
    group.add_argument("--trusted-proxies", type=int, default=0,
                       help="gateway: L7 proxies in front of it whose X-Forwarded-For entries are believed, so the "
                            "client address (remoteIpBlocks, remote.ip) is that many entries from the right "
                            "(Istio's gatewayTopology.numTrustedProxies; default 0: the connection's peer)")


def _telemetry_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--access-log", default="-", help="JSON access log: - (stdout, as Istio), a file path, or off")
    group.add_argument("--trace-sampling", type=float, default=1.0,
                       help="percent of new traces sampled (Istio's default 1; a caller's decision is kept)")
    group.add_argument("--otlp-endpoint", default=None,
                       help="also export spans to this OTLP/HTTP collector, e.g. http://otel-collector:4318")
    group.add_argument("--telemetry", choices=("on", "off"), default="on",
                       help="off: metrics only (no access log, not even the admin /access_log's recent requests; "
                            "no spans; trace headers passed untouched)")


def _limit_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--drain-timeout", type=float, default=server.DRAIN_TIMEOUT_S,
                       help="on SIGTERM, seconds in-flight requests get to finish before their connections are "
                            "closed (Istio's terminationDrainDuration, default 5)")
    group.add_argument("--memory-release-interval", type=float, default=heap.MEMORY_RELEASE_INTERVAL_S,
                       help="seconds between releases of unused memory: garbage cycles collected, free heap pages "
                            "returned to the OS (Envoy's memory_release_interval; default 30, 0 = off)")
    group.add_argument("--request-headers-timeout", type=float, default=request_limits.REQUEST_HEADERS_TIMEOUT_S,
                       help="seconds a client has to send a request's headers, from their first byte (from the "
                            "accept for a connection's first request): 408 and close (default 10; 0 = off)")
    group.add_argument("--request-body-timeout", type=float, default=request_limits.REQUEST_BODY_TIMEOUT_S,
                       help="seconds a request body may stall: 408 and close (default 30; 0 = off)")
    group.add_argument("--idle-timeout", type=float, default=request_limits.IDLE_TIMEOUT_S,
                       help="seconds a downstream keep-alive connection may sit with no request before it is "
                            "closed (Envoy's idle_timeout; default 120; 0 = off)")
    group.add_argument("--max-request-body-bytes", type=int, default=request_limits.MAX_REQUEST_BODY_BYTES,
                       help="refuse request bodies larger than this with 413 (default 0 = no limit)")


def _problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of flags, for `parser.error`; None when nothing is."""
    static = (args.tls_cert, args.tls_key, args.tls_roots)
    checks = (
        (not args.control_plane and not args.bootstrap, "one of --control-plane or --bootstrap is required"),
        (args.control_plane and not args.ca_file,
         "--control-plane needs --ca-file: the mesh root the control plane's certificate chains to"),
        (any(static) and not all(static), "--tls-cert, --tls-key and --tls-roots go together"),
        (all(static) and args.control_plane,
         "--tls-cert/--tls-key/--tls-roots replace the CA: use them with --bootstrap only"),
        (args.drain_timeout < 0, "--drain-timeout must not be negative"),
        (args.trusted_proxies < 0, "--trusted-proxies must not be negative"),
        (args.trusted_proxies and args.role != "gateway", "--trusted-proxies is a gateway's (--role gateway)"),
        (min(args.request_headers_timeout, args.request_body_timeout, args.idle_timeout,
             args.max_request_body_bytes) < 0, "request timeouts and --max-request-body-bytes must not be negative"),
        (not 0.0 < args.cert_grace_ratio < 1.0, "--cert-grace-ratio must be between 0 and 1"),
        (args.memory_release_interval != 0 and args.memory_release_interval < heap.MIN_MEMORY_RELEASE_INTERVAL_S,
         f"--memory-release-interval must be 0 (off) or at least {heap.MIN_MEMORY_RELEASE_INTERVAL_S:g} s"),
    )
    return next((message for failed, message in checks if failed), None)


def _pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if item)


def _mesh_tls(args: argparse.Namespace) -> tls.MeshTls | None:
    if not args.control_plane and not args.tls_cert:
        return None
    directory = args.cert_dir or tempfile.mkdtemp(prefix="weir-proxy-")  # mkdtemp: 0700
    return tls.MeshTls(directory)


def _agent(args: argparse.Namespace, rt: runtime.ProxyRuntime,
           control: channel.ControlChannel) -> certagent.CertAgent:
    token = os.environ.pop(certagent.TOKEN_ENV, None)  # read once; not inherited by anything we start

    async def issue(body: dict, with_certificate: bool):
        return await control.post_json("/v1/certificates", body, with_certificate=with_certificate)

    return certagent.CertAgent(rt.mesh_tls, issue, spiffe_id=security.spiffe_id(args.namespace, args.service_account),
                               bootstrap_token=token, token_file=args.token_file, ttl_s=args.cert_ttl,
                               grace_ratio=args.cert_grace_ratio, counters=rt.counters)


def _telemetry(args: argparse.Namespace, rt: runtime.ProxyRuntime, control: channel.ControlChannel | None,
               loop: asyncio.AbstractEventLoop) -> telemetry.Telemetry:
    """Access log stream, tracer and span exporters from the flags (mesh.proxy.telemetry)."""
    if args.telemetry == "off":
        return telemetry.Telemetry(args.workload, loop, rt.counters, stream=None, keep_recent=False)
    stream = None
    if args.access_log == "-":
        stream = log_writer.ThreadedWriter(sys.stdout.fileno(), rt.counters)
    elif args.access_log != "off":
        log_file = open(args.access_log, "ab")  # noqa: SIM115 (open for the process's life)
        stream = log_writer.ThreadedWriter(log_file.fileno(), rt.counters, owner=log_file)
    exporters = []
    if control is not None:
        async def to_control_plane(spans: list) -> None:
            status, answer = await control.post_json("/v1/spans", {"proxy": args.id, "spans": spans})
            if status != 200:
                raise ConnectionError(f"control plane refused spans: {status} {answer}")

        exporters.append(to_control_plane)
    if args.otlp_endpoint:
        exporters.append(otlp.exporter(args.otlp_endpoint, args.workload, args.namespace))
    return telemetry.Telemetry(args.workload, loop, rt.counters, tracer=tracing.Tracer(args.trace_sampling),
                               stream=stream, exporters=tuple(exporters))


async def serve(args: argparse.Namespace) -> int:
    labels = _pairs(args.labels)
    identity = runtime.Identity(args.id, args.role, args.namespace, args.workload, labels, args.service_account)
    tuned = heap.tune_allocator()
    rt = runtime.ProxyRuntime(identity)
    rt.counters.gauge(heap.ALLOCATOR_TUNED, lambda: float(tuned))
    rt.mesh_tls = _mesh_tls(args)
    rt.trusted_proxies = args.trusted_proxies
    rt.limits = request_limits.Limits(args.request_headers_timeout, args.request_body_timeout, args.idle_timeout,
                                      args.max_request_body_bytes)
    if args.tls_cert:
        certagent.install_static(rt.mesh_tls, args.tls_cert, args.tls_key, args.tls_roots)
    port_map = {int(k): int(v) for k, v in _pairs(args.port_map).items()}
    proxy = server.ProxyServer(rt, bind=args.bind, inbound_port=args.inbound_port,
                               outbound_port=args.outbound_port, port_map=port_map, inbound_bind=args.inbound_bind,
                               drain_timeout=args.drain_timeout, memory_release_interval=args.memory_release_interval,
                               on_first_view=heap.freeze_startup)
    node = {"id": args.id, "role": args.role, "namespace": args.namespace, "workload": args.workload,
            "labels": labels, "serviceAccount": args.service_account,
            "ports": {"app": args.app_port, "inbound": args.inbound_port, "outbound": args.outbound_port,
                      "admin": args.admin_port, "health": args.health_port}}
    if args.address:
        node["address"] = args.address
    control = agent = None
    if args.control_plane:
        host, _, port = args.control_plane.rpartition(":")
        control = channel.ControlChannel(host, int(port), args.ca_file, rt.mesh_tls, args.control_plane_sni)
        agent = _agent(args, rt, control)
    bootstrap = None
    if args.bootstrap:
        with open(args.bootstrap, encoding="utf-8") as handle:
            bootstrap = wire.from_dict(json.load(handle))
    loop = asyncio.get_running_loop()
    rt.telemetry = _telemetry(args, rt, control, loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(proxy.shutdown()))
    await proxy.start(args.admin_port, control, node, bootstrap, agent, health_port=args.health_port)
    await proxy.stopped.wait()
    rt.telemetry.close()  # the drained requests' access log lines, still waiting for a flush
    return proxy.exit_code


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        sys.exit(asyncio.run(serve(args)))
    else:
        sys.exit(uvloop.run(serve(args)))


if __name__ == "__main__":
    main()
