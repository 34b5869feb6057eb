"""Stack settings for the local runtime, read once from `stacks/Pulumi.<env>.yaml` into a frozen object.

Keys (Pulumi config, under `config:`): `weir:release` + `weir:releaseDigest` pin the routing release the
environment runs (mesh.manifests.releases; `stacks/releases/<name>/v<N>.yaml`); a development stack may
instead name a scenario file with `weir:routing` (`stacks/routing/<name>.yaml`, unreleased); exactly one;
`weir:local` holds `ingressPort`, `controlPlanePort` (meshctl's HTTP API), `portBase` and optionally
`controlPlaneTlsPort` (the proxies' TLS mesh channel; default controlPlanePort + 2, as Istio's 15010 and
15012), `ingressTlsPort` (where Gateway servers on port 443 listen; default ingressPort + 363: 8443) and
`dashboardPort` (the control plane's service graph page; default controlPlanePort + 4991: 20001).
For the Kubernetes manifests (`meshctl render`, the Pulumi program): `weir:image` (default
ghcr.io/weir-mesh/weir:0.1.0), `weir:adminUsers` (list of users bound to cluster-admin) and `weir:mtlsMode`
(STRICT|PERMISSIVE|DISABLE, default PERMISSIVE). For both: `weir:otlpEndpoint` (an OTLP/HTTP collector URL,
unset by default) makes every proxy also export its spans there (`--otlp-endpoint`).
The project root is the parent of the `stacks/` directory; the state root is `<root>/.weir/` unless `WEIR_HOME` says otherwise.
Next in the flow: mesh.local.plan turns the settings into process specs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mesh.local import errors, gates
from mesh.manifests import releases
from mesh.manifests.settings import (
    DEFAULT_IMAGE,
    MTLS_MODES,
    OTLP_ENDPOINT_KEY,
    OUTBOUND_POLICIES,
    otlp_endpoint_problem,
)

STACKS_DIR = "stacks"
STATE_ROOT = ".weir"
HOME_ENV = "WEIR_HOME"
LOCAL_PORT_KEYS = ("ingressPort", "controlPlanePort", "portBase")
TLS_PORT_KEY = "controlPlaneTlsPort"
TLS_PORT_OFFSET = 2  # derived mesh channel port: controlPlanePort + 2
INGRESS_TLS_PORT_KEY = "ingressTlsPort"
INGRESS_TLS_PORT_OFFSET = 363  # derived HTTPS ingress port: 8080 → 8443
DASHBOARD_PORT_KEY = "dashboardPort"
DASHBOARD_PORT_OFFSET = 4991  # derived dashboard port: 15010 → 20001 (Kiali's), 15110 → 20101, 15210 → 20201


@dataclass(frozen=True, slots=True)
class StackSettings:
    """What the local runtime needs from one stack file."""

    name: str
    root: Path  # project root: processes run here, so `python -m mesh…` and `-m bookinfo…` import
    state_dir: Path
    routing: str  # what runs: the pinned release (`ratings-50@v2`) or the scenario's name
    routing_file: Path  # the release record or the scenario file
    ingress_port: int
    control_plane_port: int
    port_base: int
    outbound_policy: str = "ALLOW_ANY"  # meshConfig.outboundTrafficPolicy.mode
    control_plane_tls_port: int | None = None  # weir:local.controlPlaneTlsPort when the file sets it
    workload_cert_ttl: str | None = None  # weir:security.workloadCertTtl ("24h"); None: the CA's default
    ingress_tls_port_setting: int | None = None  # weir:local.ingressTlsPort when the file sets it
    dashboard_port_setting: int | None = None  # weir:local.dashboardPort when the file sets it
    image: str = DEFAULT_IMAGE  # weir:image (Kubernetes manifests only)
    admin_users: tuple[str, ...] = ()  # weir:adminUsers
    mtls_mode: str = "PERMISSIVE"  # weir:mtlsMode: the mesh-wide PeerAuthentication
    release: releases.Pin | None = None  # weir:release + weir:releaseDigest; None: an unreleased scenario
    source: Path | None = None  # the stack file
    promotion: gates.PromotionPolicy = gates.PromotionPolicy()  # weir:promotion (mesh.local.gates)
    otlp_endpoint: str | None = None  # weir:otlpEndpoint: every proxy's --otlp-endpoint; None: no OTLP export

    def routing_resources(self) -> tuple[dict[str, Any], ...]:
        """The resources this environment runs, as custom resources (validated; a release is verified
        against its recorded and its pinned digest)."""
        if self.release is not None:
            store = releases.ReleaseStore(self.root)
            try:
                return store.resolve(self.release.ref, self.release.digest, where=str(self.source)).resources
            except releases.ReleaseError as exc:
                raise errors.StackError(str(exc)) from None
        from mesh.manifests import routing  # loads mesh.api: only when a scenario file is deployed

        return tuple(routing.custom_resources(self.routing_file))

    def pinned(self) -> tuple[str, str]:
        """(ref, digest) the environment must run: the pin, or an unreleased scenario's content digest; what
        `up` labels the control plane's config with and what smoke's release-in-effect expects."""
        if self.release is not None:
            return self.release.ref, self.release.digest
        return self.routing, releases.digest_of(self.routing_resources())

    @property
    def ingress_tls_port(self) -> int:
        """Where the ingress serves Gateway servers of port 443: ingressTlsPort, else ingressPort + 363."""
        return self.ingress_tls_port_setting or self.ingress_port + INGRESS_TLS_PORT_OFFSET

    @property
    def dashboard_port(self) -> int:
        """The control plane's service graph page: dashboardPort, else controlPlanePort + 4991 (20001)."""
        return self.dashboard_port_setting or self.control_plane_port + DASHBOARD_PORT_OFFSET

    @property
    def mesh_channel_port(self) -> int:
        """The control plane's TLS port for proxies: controlPlaneTlsPort, else controlPlanePort + 2."""
        return self.control_plane_tls_port or self.control_plane_port + TLS_PORT_OFFSET


def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest directory at or above `start` (default: cwd) with a `stacks/`
    directory holding a stack file, else the checkout this package was imported from."""
    here = (start or Path.cwd()).resolve()
    package_root = Path(__file__).resolve().parents[2]
    for candidate in (here, *here.parents, package_root):
        if any((candidate / STACKS_DIR).glob("Pulumi.*.yaml")):
            return candidate
    raise errors.StackError(f"no {STACKS_DIR}/Pulumi.<env>.yaml found at or above {here}")


def state_dir(stack: str, root: Path | None = None) -> Path:
    """`$WEIR_HOME/<stack>` when set, else `<root>/.weir/<stack>`."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser().resolve() / stack
    return (root or find_root()) / STATE_ROOT / stack


def load(stack: str, root: Path | None = None) -> StackSettings:
    """Read and check `stacks/Pulumi.<stack>.yaml`; every error names the file and the key."""
    root = root or find_root()
    path = root / STACKS_DIR / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (root / STACKS_DIR).glob("Pulumi.*.yaml"))
        raise errors.StackError(f"stack {stack!r}: {path} not found (stacks: {', '.join(known) or 'none'})")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise errors.StackError(f"{path}: not valid YAML: {exc}") from None
    return parse(doc, stack=stack, root=root, source=path)


def parse(doc: Any, *, stack: str, root: Path, source: Path) -> StackSettings:
    """Check a parsed stack document (pure apart from checking that the scenario file exists)."""
    config = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        raise errors.StackError(f"{source}: missing key `config` (a mapping of Pulumi config keys)")
    pin, routing, routing_file = _routing(config, root, source)
    local = config.get("weir:local")
    if not isinstance(local, dict):
        raise errors.StackError(f"{source}: missing key `weir:local` (a mapping with "
                                f"{', '.join(LOCAL_PORT_KEYS)})")
    ports = {key: _port(local, key, source) for key in LOCAL_PORT_KEYS}
    tls_port = _port(local, TLS_PORT_KEY, source) if local.get(TLS_PORT_KEY) is not None else None
    ingress_tls = (_port(local, INGRESS_TLS_PORT_KEY, source) if local.get(INGRESS_TLS_PORT_KEY) is not None
                   else None)
    dashboard = _port(local, DASHBOARD_PORT_KEY, source) if local.get(DASHBOARD_PORT_KEY) is not None else None
    outbound_policy = _outbound_policy(config.get("weir:meshConfig"), source)
    return StackSettings(
        name=stack,
        root=root,
        state_dir=state_dir(stack, root),
        routing=routing,
        routing_file=routing_file,
        ingress_port=ports["ingressPort"],
        control_plane_port=ports["controlPlanePort"],
        port_base=ports["portBase"],
        outbound_policy=outbound_policy,
        control_plane_tls_port=tls_port,
        workload_cert_ttl=_workload_cert_ttl(config.get("weir:security"), source),
        ingress_tls_port_setting=ingress_tls,
        dashboard_port_setting=dashboard,
        release=pin,
        source=source,
        promotion=gates.parse_policy(config.get("weir:promotion"), str(source)),
        otlp_endpoint=_otlp_endpoint(config, source),
        **_kubernetes(config, source),
    )


def _routing(config: dict[str, Any], root: Path, source: Path) -> tuple[releases.Pin | None, str, Path]:
    """`weir:release` (+ digest), checked against the release store, or else `weir:routing` (a scenario)."""
    try:
        pin = releases.parse_pin(config, str(source))
        if pin is not None:
            if config.get("weir:routing") is not None:
                raise errors.StackError(f"{source}: set `weir:release` or `weir:routing`, not both")
            store = releases.ReleaseStore(root)
            store.resolve(pin.ref, pin.digest, where=str(source))
            name, version = releases.parse_ref(pin.ref)
            return pin, pin.ref, store.path(name, version)
    except releases.ReleaseError as exc:
        raise errors.StackError(str(exc)) from None
    routing = config.get("weir:routing")
    if not isinstance(routing, str) or not routing.strip():
        raise errors.StackError(f"{source}: key `weir:release` must pin a release (NAME@vN, with "
                                f"`weir:releaseDigest`), or `weir:routing` name a scenario in stacks/routing/; "
                                f"got neither")
    routing_file = root / STACKS_DIR / "routing" / f"{routing}.yaml"
    if not routing_file.is_file():
        raise errors.StackError(f"{source}: key `weir:routing` names scenario {routing!r}, "
                                f"but {routing_file} does not exist")
    return None, routing, routing_file


def _kubernetes(config: dict[str, Any], source: Path) -> dict[str, Any]:
    """`weir:image`, `weir:adminUsers`, `weir:mtlsMode`: what only the Kubernetes manifests read."""
    out: dict[str, Any] = {}
    image = config.get("weir:image")
    if image is not None:
        if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
            raise errors.StackError(f"{source}: key `weir:image` must be an image reference, got {image!r}")
        out["image"] = image
    users = config.get("weir:adminUsers")
    if users is not None:
        if not isinstance(users, list) or not all(isinstance(u, str) and u.strip() for u in users):
            raise errors.StackError(f"{source}: key `weir:adminUsers` must be a list of user names, got {users!r}")
        out["admin_users"] = tuple(users)
    mode = config.get("weir:mtlsMode")
    if mode is not None:
        if mode not in MTLS_MODES:
            raise errors.StackError(f"{source}: key `weir:mtlsMode` must be one of {', '.join(MTLS_MODES)}, "
                                    f"got {mode!r}")
        out["mtls_mode"] = mode
    return out


def _otlp_endpoint(config: dict[str, Any], source: Path) -> str | None:
    """`weir:otlpEndpoint`: the OpenTelemetry collector every proxy also sends its spans to; None when unset."""
    endpoint = config.get(OTLP_ENDPOINT_KEY)
    if endpoint is None:
        return None
    problem = otlp_endpoint_problem(endpoint)
    if problem is not None:
        raise errors.StackError(f"{source}: key `{OTLP_ENDPOINT_KEY}`: {problem}")
    return endpoint


def _workload_cert_ttl(security: Any, source: Path) -> str | None:
    """`weir:security.workloadCertTtl`: the lifetime of workload certificates (Istio's 24h when unset)."""
    if security is None:
        return None
    ttl = security.get("workloadCertTtl") if isinstance(security, dict) else security
    if ttl is None:
        return None
    # the one duration syntax (the control plane's --workload-cert-ttl too); imported here, mesh.api is slow to load
    from mesh.api.types import parse_duration

    try:
        seconds = parse_duration(ttl)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise errors.StackError(f"{source}: key `weir:security.workloadCertTtl` must be a positive duration "
                                f"such as 24h, 90m or 30s, got {ttl!r}")
    return ttl


def _outbound_policy(mesh_config: Any, source: Path) -> str:
    """Istio's `meshConfig.outboundTrafficPolicy.mode`; ALLOW_ANY when unset, as in Istio."""
    if mesh_config is None:
        return "ALLOW_ANY"
    mode = ((mesh_config.get("outboundTrafficPolicy") or {}).get("mode", "ALLOW_ANY")
            if isinstance(mesh_config, dict) else None)
    if mode not in OUTBOUND_POLICIES:
        raise errors.StackError(f"{source}: key `weir:meshConfig.outboundTrafficPolicy.mode` must be one of "
                                f"{', '.join(OUTBOUND_POLICIES)}, got {mode!r}")
    return mode


def _port(local: dict[str, Any], key: str, source: Path) -> int:
    value = local.get(key)
    if value is None:
        raise errors.StackError(f"{source}: missing key `weir:local.{key}`")
    if isinstance(value, str) and value.isdigit():  # `pulumi config set --path` may store strings
        value = int(value)
    # bool is an int subclass; `true` is not a port
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise errors.StackError(f"{source}: key `weir:local.{key}` must be a port number 1-65535, got {value!r}")
    return value
