"""`python -m mesh.proxy`: run a sidecar or gateway proxy (see docs/architecture.md for the flags)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from mesh.proxy import runtime, server
from mesh.view import wire


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mesh.proxy", description="Weir sidecar / gateway proxy")
    parser.add_argument("--role", choices=("sidecar", "gateway"), default="sidecar")
    parser.add_argument("--id", required=True, help="proxy id, e.g. books-v1.bookinfo")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--workload", required=True)
    parser.add_argument("--labels", default="", help="k=v,k=v")
    parser.add_argument("--service-account", default="default")
    parser.add_argument("--control-plane", default=None, help="host:port of the control plane")
    parser.add_argument("--bootstrap", default=None, help="a static view (JSON file) instead of a control plane")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--inbound-port", type=int, default=15006)
    parser.add_argument("--outbound-port", type=int, default=15001)
    parser.add_argument("--app-port", type=int, default=9080)
    parser.add_argument("--admin-port", type=int, default=15000)
    parser.add_argument("--port-map", default="", help="gateway: server port=local port, e.g. 80=8080")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if not args.control_plane and not args.bootstrap:
        parser.error("one of --control-plane or --bootstrap is required")
    return args


def _pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if item)


async def serve(args: argparse.Namespace) -> None:
    labels = _pairs(args.labels)
    identity = runtime.Identity(args.id, args.role, args.namespace, args.workload, labels, args.service_account)
    rt = runtime.ProxyRuntime(identity)
    port_map = {int(k): int(v) for k, v in _pairs(args.port_map).items()}
    proxy = server.ProxyServer(rt, bind=args.bind, inbound_port=args.inbound_port,
                               outbound_port=args.outbound_port, port_map=port_map)
    node = {"id": args.id, "role": args.role, "namespace": args.namespace, "workload": args.workload,
            "labels": labels, "serviceAccount": args.service_account,
            "ports": {"app": args.app_port, "inbound": args.inbound_port, "outbound": args.outbound_port,
                      "admin": args.admin_port}}
    control = None
    if args.control_plane:
        host, _, port = args.control_plane.rpartition(":")
        control = (host, int(port))
    bootstrap = None
    if args.bootstrap:
        with open(args.bootstrap, encoding="utf-8") as handle:
            bootstrap = wire.from_dict(json.load(handle))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(proxy.shutdown()))
    await proxy.start(args.admin_port, control, node, bootstrap)
    await proxy.stopped.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
