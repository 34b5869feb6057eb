"""`python -m mesh.control`: the control plane process (local mode), on 127.0.0.1.

    python -m mesh.control --port P --state-dir D --registry FILE [--config FILE]...
        [--outbound-policy ALLOW_ANY|REGISTRY_ONLY] [--log-level info]

Startup: load `--config` files (a bad one stops the process with exit code 2), then the resources
persisted under D/config/, start the registry watch, serve. SIGTERM/SIGINT: not ready, answer every
long poll, stop the watchers, close the server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import mesh.api as api
from mesh.control import config_store, plane, registry, server, snapshot

log = logging.getLogger("mesh.control")

SHUTDOWN_TIMEOUT = 5.0  # seconds for in-flight requests once long polls were answered


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mesh.control", description="Weir control plane (local mode)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state-dir", required=True, help="persisted config goes to STATE_DIR/config/")
    p.add_argument("--registry", required=True, help="registry.json, polled for changes")
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="Istio YAML (repeatable)")
    p.add_argument("--outbound-policy", choices=snapshot.OUTBOUND_POLICIES, default=snapshot.ALLOW_ANY)
    p.add_argument("--log-level", default="info")
    p.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    store = config_store.ConfigStore(args.state_dir)
    try:
        store.load_files(args.config)
    except api.ConfigError as exc:
        log.error("refusing to start: %s", exc)
        return 2
    except OSError as exc:
        log.error("refusing to start: %s", exc)
        return 2
    store.load_persisted()
    control = plane.ControlPlane(store, registry.LocalRegistry(args.registry), args.outbound_policy)
    await control.start()
    runner = server.web.AppRunner(server.make_app(control), shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None)
    await runner.setup()
    site = server.web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        await control.stop()
        await runner.cleanup()
        return 1
    log.info("listening on http://%s:%d", args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await control.stop()
    await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
