"""Weir sidecars in the bench: the static views they run from, and starting one as a real process.

Without a control plane a sidecar runs from `--bootstrap view.json`. Two views are enough here:
- `inbound_view(port)`: the inbound listener forwards every request to the local app at `port` (the
  server-side sidecar, and the single-sidecar case);
- `outbound_view(port)`: the outbound listener, used as an HTTP proxy with `Host: up:9080`, routes host
  `up` on service port 9080 to an endpoint at `port` (the client-side sidecar of the pair, whose endpoint
  is the server sidecar's inbound listener);
- `outbound_view(port, resilience=True)`: the same, with issue 3's resilience settings on the outbound
  route (timeout, retries) and cluster (connection-pool limits, outlier detection). Only the outbound side
  has routes and upstream clusters to apply them to, so only the pair's client sidecar carries them. The
  limits are far above the bench's 64 connections: they are checked on every request but never trip.
- `pair-mtls`: the pair again with issue 4's automatic mutual TLS between the two sidecars. The server's
  inbound view is PeerAuthentication STRICT (`inbound_view(port, mode=STRICT)`: plaintext is refused, so
  every measured request crossed mTLS), the client's endpoint carries `mtls=True` and the server's SPIFFE
  ID (`outbound_view(port, peer_identity=...)`). Both run with a static identity from a throw-away test CA
  (`write_identities`, passed as `--tls-cert/--tls-key/--tls-roots`), no control plane.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench import processes
from mesh.proxy import certagent
from mesh.view import model, security, wire

SERVICE_HOST = "up"
SERVICE_PORT = 9080  # the service port in the Host header; it names the outbound route table
HOST_HEADER = f"{SERVICE_HOST}:{SERVICE_PORT}"
INBOUND_CLUSTER = f"inbound|{SERVICE_PORT}||"
OUTBOUND_CLUSTER = f"outbound|{SERVICE_PORT}||{SERVICE_HOST}.default.svc.cluster.local"
REPO_ROOT = Path(__file__).resolve().parent.parent

# Issue 3: a VirtualService with retries and a timeout; a DestinationRule with pool limits and outlier
# detection. The limits are far above the bench's load (64 connections), so they never overflow.
RESILIENT_TIMEOUT_S = 5.0
RESILIENT_RETRIES = model.RetryPolicy(attempts=3, per_try_timeout_s=2.0,
                                      retry_on=("5xx", "connect-failure", "reset"))
RESILIENT_POOL = model.ConnectionPool(max_connections=1024, max_pending_requests=1024, max_requests=1024,
                                      max_retries=3)
RESILIENT_OUTLIER = model.OutlierDetection(consecutive_5xx=5, interval_s=10.0, base_ejection_time_s=30.0,
                                           max_ejection_percent=10.0)


def inbound_view(app_port: int, proxy: str = "bench-server", mode: str = security.PERMISSIVE) -> model.ProxyView:
    return model.ProxyView(
        proxy=proxy,
        listeners=(model.Listener("virtualInbound", model.INBOUND, SERVICE_PORT, cluster=INBOUND_CLUSTER),),
        clusters=(model.Cluster(INBOUND_CLUSTER, port=SERVICE_PORT),),
        endpoints=(model.ClusterEndpoints(INBOUND_CLUSTER, (model.Endpoint("127.0.0.1", app_port),)),),
        security=model.Security(mtls=model.InboundMtls(mode)),
    )


def outbound_view(endpoint_port: int, proxy: str = "bench-client",
                  resilience: bool = False, peer_identity: str = "") -> model.ProxyView:
    """`peer_identity`: the server sidecar's SPIFFE ID; set, the endpoint takes auto mTLS (`mtls=True`)."""
    route = model.Route("default", (), (model.WeightedCluster(OUTBOUND_CLUSTER, 1),))
    cluster = model.Cluster(OUTBOUND_CLUSTER, service=f"{SERVICE_HOST}.default.svc.cluster.local",
                            port=SERVICE_PORT)
    if resilience:
        route = replace(route, timeout_s=RESILIENT_TIMEOUT_S, retries=RESILIENT_RETRIES)
        cluster = replace(cluster, pool=RESILIENT_POOL, outlier=RESILIENT_OUTLIER)
    host = model.VirtualHost(f"{SERVICE_HOST}:{SERVICE_PORT}", (SERVICE_HOST,), (route,))
    endpoint = model.Endpoint("127.0.0.1", endpoint_port, "up-v1", "default", SERVICE_HOST, "v1",
                              identity=peer_identity, mtls=bool(peer_identity))
    return model.ProxyView(
        proxy=proxy,
        listeners=(model.Listener("virtualOutbound", model.OUTBOUND, 15001),),
        route_tables=(model.RouteTable(str(SERVICE_PORT), (host,)),),
        clusters=(cluster,),
        endpoints=(model.ClusterEndpoints(OUTBOUND_CLUSTER, (endpoint,)),),
    )


def resilience_settings() -> dict:
    """What `resilience=True` sets, for the results JSON."""
    return {"route": {"timeout_s": RESILIENT_TIMEOUT_S, "retries": asdict(RESILIENT_RETRIES)},
            "cluster": {"pool": asdict(RESILIENT_POOL), "outlier": asdict(RESILIENT_OUTLIER)}}


@dataclass(frozen=True)
class Identity:
    """A sidecar's static mesh identity: the files `--tls-cert/--tls-key/--tls-roots` name."""

    spiffe_id: str
    cert: Path
    key: Path
    roots: Path

    def flags(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key), "--tls-roots", str(self.roots)]


def write_identities(workdir: Path, *accounts: str, namespace: str = "default") -> dict[str, Identity]:
    """A throw-away mesh CA and one workload certificate per service account, written under `workdir`."""
    from mesh.control import ca as ca_mod  # the real CA code, as the control plane signs

    now = time.time()
    authority = ca_mod.CertificateAuthority.create_root(now=now)
    roots = workdir / "mesh-root.pem"
    roots.write_bytes(authority.root_pem)
    out = {}
    for account in accounts:
        spiffe = security.spiffe_id(namespace, account)
        key = ca_mod.new_key()
        chain = authority.sign_workload(certagent.make_csr(key, spiffe), spiffe, now=now)
        cert_file, key_file = workdir / f"{account}.pem", workdir / f"{account}.key"
        cert_file.write_bytes(chain)
        key_file.touch(mode=0o600)
        key_file.write_bytes(ca_mod.key_pem(key))
        out[account] = Identity(spiffe, cert_file, key_file, roots)
    return out


@dataclass
class Sidecar:
    name: str
    proc: subprocess.Popen
    inbound_port: int
    outbound_port: int
    admin_port: int

    @property
    def pid(self) -> int:
        return self.proc.pid


def command(name: str, view_path: Path, inbound: int, outbound: int, admin: int,
            identity: Identity | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "mesh.proxy", "--role", "sidecar", "--id", name, "--workload", name,
            "--labels", f"app={name},version=v1", "--bootstrap", str(view_path),
            "--inbound-port", str(inbound), "--outbound-port", str(outbound), "--admin-port", str(admin),
            "--log-level", "warning", *(identity.flags() if identity is not None else ()), *extra]


def start(procs: processes.Processes, name: str, view: model.ProxyView, workdir: Path,
          cpus: list[str], identity: Identity | None = None, extra: tuple[str, ...] = (),
          tree: Path | None = None) -> Sidecar:
    """Write the view, start the sidecar pinned to `cpus`, return once its admin `/ready` says 200. `tree`: the
    checkout whose `mesh.proxy` runs (`python -m` imports from its working directory), by default this one."""
    model.check_references(view)
    view_path = workdir / f"{name}.view.json"
    view_path.write_text(json.dumps(wire.to_dict(view)))
    inbound, outbound, admin = (processes.free_port() for _ in range(3))
    proc = procs.start(name, command(name, view_path, inbound, outbound, admin, identity, extra), cpus=cpus,
                       cwd=str(tree or REPO_ROOT))
    try:
        processes.wait_until(lambda: processes.http_ok(f"http://127.0.0.1:{admin}/ready"), proc, name)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{procs.log_tail(proc)}") from None
    return Sidecar(name, proc, inbound, outbound, admin)
