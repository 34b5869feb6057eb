"""`python -m mesh.control`: the control plane process.

    python -m mesh.control --port P --tls-port T --state-dir D --registry FILE [--config FILE]...
    python -m mesh.control --platform kubernetes --tls-host 0.0.0.0 --port P --tls-port T --state-dir D
        [--outbound-policy ALLOW_ANY|REGISTRY_ONLY] [--platform local|kubernetes]
        [--ca-root-cert FILE --ca-root-key FILE] [--workload-cert-ttl 24h] [--log-level info]

Two listeners, like istiod: meshctl's plain HTTP API on loopback (`--port`, `mesh.control.server`) and
the TLS mesh channel for proxies (`--tls-port`, `mesh.control.channel`: discovery and CSRs); the service
graph dashboard on its own loopback port (`--dashboard-port`, 20001; 0: off; a taken port only disables it).
Startup: the mesh CA (local: D/ca/, created on first start; kubernetes: the Secret weir-system/weir-ca),
then the `--config` files (a bad one stops the process with exit code 2), then the resources persisted
under D/config/, the registry watch, serve. CA material that cannot be used also exits with 2.
On kubernetes the two seams are the CRD watch (`kube_config`, listed before the first snapshot; the
HTTP API's apply/delete are refused) and EndpointSlices (`kube_registry`); `root_publisher` keeps the
ConfigMap weir-ca-root-cert in meshed namespaces; `/debug/kubernetes` shows watches and rejections.
SIGTERM/SIGINT: not ready, answer every long poll, stop the watchers, close the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import ssl
import sys
import time
from pathlib import Path

import mesh.api as api
from mesh.api.types import parse_duration
from mesh.control import (
    authn,
    ca,
    ca_store,
    certificates,
    channel,
    config_store,
    kube,
    kube_config,
    kube_registry,
    plane,
    private,
    registry,
    root_publisher,
    server,
    serving,
    snapshot,
)
from mesh.control.dashboard import app as dashboard

log = logging.getLogger("mesh.control")

SHUTDOWN_TIMEOUT = 5.0  # seconds for in-flight requests once long polls were answered
PLATFORMS = ("local", "kubernetes")
READ_ONLY = "on kubernetes, config comes from the Istio custom resources: use kubectl apply/delete"


def duration(text: str) -> float:
    """`24h`, `90m`, `1h30m`, `3600s` → seconds (argparse type): a positive duration as `mesh.api` reads one,
    so `--workload-cert-ttl` takes exactly what a stack's `weir:security.workloadCertTtl` may say."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration (24h, 90m, 3600s)")
    return seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mesh.control", description="Weir control plane")
    p.add_argument("--port", type=int, required=True, help="meshctl's plain HTTP API, on loopback")
    p.add_argument("--tls-port", type=int, required=True, help="the mesh channel (TLS): discovery and CSRs")
    p.add_argument("--tls-host", default="127.0.0.1", help="address of the mesh channel (0.0.0.0 in a pod)")
    p.add_argument("--state-dir", required=True, help="persisted config goes to STATE_DIR/config/, the CA to ca/")
    p.add_argument("--registry", help="local: registry.json, polled for changes (kubernetes: EndpointSlices)")
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="Istio YAML (repeatable)")
    p.add_argument("--outbound-policy", choices=snapshot.OUTBOUND_POLICIES, default=snapshot.ALLOW_ANY)
    p.add_argument("--root-namespace", default=snapshot.ROOT_NAMESPACE,
                   help="mesh-wide security policies live here (Istio's rootNamespace)")
    p.add_argument("--credentials-dir", type=Path, metavar="DIR",
                   help="Gateway credentialName NAME → DIR/NAME/{tls.crt,tls.key,ca.crt} (default STATE_DIR/credentials)")
    p.add_argument("--platform", choices=PLATFORMS, default="local",
                   help="local: CA in STATE_DIR/ca, bootstrap tokens; kubernetes: CA Secret, TokenReview")
    p.add_argument("--ca-root-cert", type=Path, help="an operator's root: the mesh CA becomes its intermediate")
    p.add_argument("--ca-root-key", type=Path, help="the key of --ca-root-cert (mode 0600)")
    p.add_argument("--workload-cert-ttl", type=duration, default=ca.DEFAULT_WORKLOAD_TTL_S, metavar="DURATION",
                   help="lifetime of workload certificates, at most what a proxy asks for (default 24h)")
    p.add_argument("--token-audience", default=authn.DEFAULT_AUDIENCE, help="kubernetes: audience of CSR tokens")
    p.add_argument("--ca-secret", default=f"{ca_store.SECRET_NAMESPACE}/{ca_store.SECRET_NAME}",
                   metavar="NAMESPACE/NAME", help="kubernetes: the Secret holding the CA")
    p.add_argument("--kubeconfig", metavar="FILE",
                   help="kubernetes: reach the API server through this kubeconfig (default: in-cluster config)")
    p.add_argument("--kube-context", metavar="NAME", help="kubernetes: the kubeconfig context (default: current)")
    p.add_argument("--serving-host", action="append", default=[], metavar="NAME",
                   help="another name or address of the mesh channel for its certificate (repeatable)")
    p.add_argument("--dashboard-port", type=int, default=dashboard.DEFAULT_PORT, metavar="PORT",
                   help="the service graph dashboard on loopback (mesh.control.dashboard); 0: off")
    p.add_argument("--log-level", default="info")
    p.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.platform == "local" and not args.registry:
        p.error("--registry is required with --platform local")
    if bool(args.ca_root_cert) != bool(args.ca_root_key):
        p.error("--ca-root-cert and --ca-root-key go together")
    if args.platform == "kubernetes" and args.config:
        p.error("on kubernetes config comes from the custom resources (kubectl apply), not --config")
    if args.platform == "kubernetes" and args.ca_root_cert:
        p.error("on kubernetes an operator's CA goes into the Secret (--ca-secret), not --ca-root-cert")
    if args.workload_cert_ttl > ca.MAX_WORKLOAD_TTL_S:
        p.error(f"--workload-cert-ttl: at most {ca.MAX_WORKLOAD_TTL_S / 86400:g} days")
    if not _is_loopback(args.host):
        p.error("the plain HTTP API serves loopback only (meshctl); proxies use --tls-port")
    return args


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def load_authority(args: argparse.Namespace, api_server: kube.ApiServer | None = None,
                         ) -> tuple[ca.CertificateAuthority, certificates.TokenAuthenticator]:
    """The mesh CA and the authenticator of CSR tokens for the platform."""
    ca_dir = Path(args.state_dir) / "ca"
    if args.platform == "local":
        store = ca_store.LocalStore(ca_dir)
        authority = store.load_or_create(now=time.time(), workload_ttl_s=args.workload_cert_ttl,
                                         root_cert_file=args.ca_root_cert, root_key_file=args.ca_root_key)
        return authority, authn.BootstrapTokens(ca_dir / "tokens")
    transport = api_server or kube.in_cluster()
    namespace, _, name = args.ca_secret.partition("/")
    authority = await ca_store.KubernetesStore(transport, namespace, name).load_or_create(
        now=time.time(), workload_ttl_s=args.workload_cert_ttl)
    private.ensure_private_dir(ca_dir)  # the serving certificate's files
    return authority, authn.TokenReviewer(transport, args.token_audience)


class KubernetesInputs:
    """The two seams on Kubernetes (CRD watch, EndpointSlices) plus the root-certificate ConfigMaps."""

    def __init__(self, api_server: kube.Api, authority: ca.CertificateAuthority, control_namespace: str) -> None:
        self.store = config_store.ConfigStore(read_only=READ_ONLY)
        self.config = kube_config.KubernetesConfig(api_server, self.store)
        self.registry = kube_registry.KubernetesRegistry(api_server)
        self.publisher = root_publisher.RootPublisher(api_server, authority.root_pem, control_namespace)

    async def start(self) -> None:
        """Config is listed before the first snapshot (the registry is, by ControlPlane.start)."""
        await self.publisher.start()
        await self.config.start()

    async def stop(self) -> None:
        await self.config.stop()
        await self.publisher.stop()

    async def debug(self, request: server.web.Request) -> server.web.Response:
        return server.web.json_response({"config": self.config.dump(), "registry": self.registry.dump(),
                                         "rootCert": self.publisher.dump()})


async def _listen(app, host: str, port: int, context: ssl.SSLContext | None) -> server.web.AppRunner | None:
    runner = server.web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None)
    await runner.setup()
    try:
        await server.web.TCPSite(runner, host, port, ssl_context=context).start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        await runner.cleanup()
        return None
    log.info("listening on %s://%s:%d", "https" if context else "http", host, port)
    return runner


async def serve(args: argparse.Namespace) -> int:
    api_server = None
    try:
        if args.platform == "kubernetes":
            api_server = await kube.connect(args.kubeconfig, args.kube_context)
        authority, token_authn = await load_authority(args, api_server)
    except (ca_store.CAStoreError, kube.KubeError, OSError) as exc:
        log.error("refusing to start: %s", exc)
        return 2
    inputs = None
    if api_server is not None:
        inputs = KubernetesInputs(api_server, authority, args.ca_secret.partition("/")[0])
        store, source = inputs.store, inputs.registry
    else:
        store, source = config_store.ConfigStore(args.state_dir), registry.LocalRegistry(args.registry)
        try:
            store.load_files(args.config)
        except (api.ConfigError, OSError) as exc:
            log.error("refusing to start: %s", exc)
            return 2
        store.load_persisted()
    certs = certificates.CertificateService(authority, token_authn)
    settings = snapshot.MeshSettings(
        root_namespace=args.root_namespace,
        credentials_dir=str((args.credentials_dir or Path(args.state_dir) / "credentials").resolve()),
    )
    control = plane.ControlPlane(store, source, args.outbound_policy, certs=certs, settings=settings)
    identity = serving.ServingCertificate(lambda: certs.authority, Path(args.state_dir) / "ca",
                                          (*serving.DEFAULT_HOSTS, *args.serving_host))
    context = identity.issue()
    app = server.make_app(control)
    if inputs is not None:
        await inputs.start()
        app.router.add_get("/debug/kubernetes", inputs.debug)
    await control.start()
    runners = [await _listen(app, args.host, args.port, None),
               await _listen(channel.make_app(control, certs), args.tls_host, args.tls_port, context)]
    if None in runners:
        await _stop(control, [r for r in runners if r is not None], None, inputs, api_server)
        return 1
    board = await dashboard.start(control, args.host, args.dashboard_port)  # None: off or port taken
    runners += [board] if board is not None else []
    renewal = asyncio.create_task(identity.run(), name="serving-cert")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await _stop(control, runners, renewal, inputs, api_server)
    return 0


async def _stop(control: plane.ControlPlane, runners: list, renewal: asyncio.Task | None,
                inputs: KubernetesInputs | None = None, api_server: kube.ApiServer | None = None) -> None:
    await registry.cancel(renewal)
    await control.stop()
    if inputs is not None:
        await inputs.stop()
    for runner in runners:
        await runner.cleanup()
    if api_server is not None:
        await api_server.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
