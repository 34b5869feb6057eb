"""One stack's settings, read once from Pulumi config and validated at the edge: `load()` → `StackSettings`.

Every key is checked here; a bad or missing one raises `SettingsError` naming the key (`weir:nodePool.minNodes`)
and what was expected, so `pulumi up` fails before anything is created. Downstream components trust the
frozen result. `StackSettings.manifests` is the `mesh.manifests.settings.ManifestSettings` the Kubernetes
objects are rendered from (the same contract `meshctl render` fills from the stack file).
Next: `__main__` hands these to `infra.cluster`, `infra.platform`, `infra.bookinfo` and `infra.routing`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mesh.manifests.settings as manifest_settings
from mesh.api.types import parse_duration
from mesh.manifests import releases, routing

ROOT = Path(__file__).resolve().parents[1]
ROUTING_DIR = ROOT / "stacks" / "routing"
RELEASE_CHANNELS = ("RAPID", "REGULAR", "STABLE")  # "no pinned latest": the channel picks the version
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")  # GKE cluster / AR repository names
_MISSING = object()

Reader = Callable[[str], Any]  # full key ("weir:clusterName") -> parsed value, or _MISSING


class SettingsError(ValueError):
    """A stack config key is missing or invalid; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"stack config {key}: {problem}")
        self.key = key


@dataclass(frozen=True, slots=True)
class NodePool:
    machine_type: str
    min_nodes: int  # totals over the region's zones (GKE's total_min/max_node_count)
    max_nodes: int
    disk_size_gb: int
    disk_type: str


@dataclass(frozen=True, slots=True)
class Network:
    nodes_cidr: str  # the subnet's primary range
    pods_cidr: str  # secondary range "pods"
    services_cidr: str  # secondary range "services"
    master_cidr: str  # the control plane's /28 (private cluster peering range)


@dataclass(frozen=True, slots=True)
class AuthorizedNetwork:
    name: str
    cidr: str


@dataclass(frozen=True, slots=True)
class StackSettings:
    stack: str
    project: str
    region: str
    cluster_name: str
    autopilot: bool
    node_pool: NodePool  # ignored when autopilot
    release_channel: str
    network: Network
    authorized_networks: tuple[AuthorizedNetwork, ...]
    deletion_protection: bool
    admin_users: tuple[str, ...]
    image: str
    registry: str  # Artifact Registry repository id
    mtls_mode: str
    outbound_policy: str
    routing: str  # the pinned release (`all-v1@v1`), or an unreleased scenario's name
    routing_resources: tuple[dict[str, Any], ...]  # its custom resources, validated (and digest-checked)
    workload_cert_ttl: str  # weir:security.workloadCertTtl, Istio's 24h when unset
    otlp_endpoint: str | None = None  # weir:otlpEndpoint: every proxy also exports spans there; None: off

    @property
    def workload_pool(self) -> str:
        return f"{self.project}.svc.id.goog"

    @property
    def manifests(self) -> manifest_settings.ManifestSettings:
        return manifest_settings.ManifestSettings(
            stack=self.stack,
            image=self.image,
            routing=self.routing_resources,
            admin_users=self.admin_users,
            mtls_mode=self.mtls_mode,
            outbound_policy=self.outbound_policy,
            workload_cert_ttl=self.workload_cert_ttl,
            otlp_endpoint=self.otlp_endpoint,
        )


# ---- typed readers: each names the key it checks ----


def _get(read: Reader, key: str, default: Any = _MISSING) -> Any:
    value = read(key)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise SettingsError(key, "missing (set it in stacks/Pulumi.<stack>.yaml or `pulumi config set`)")
        return default
    return value


def _str(value: Any, key: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise SettingsError(key, f"expected a non-empty string, got {value!r}")
    if pattern and not pattern.match(value):
        raise SettingsError(key, f"{value!r} does not match {pattern.pattern}")
    return value


def _int(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(key, f"expected an integer in [{low}, {high}], got {value!r}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(key, f"expected true or false, got {value!r}")
    return value


def _choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SettingsError(key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _cidr(value: Any, key: str, max_prefix: int = 32) -> str:
    try:
        net = ipaddress.IPv4Network(_str(value, key))
    except ValueError as exc:
        raise SettingsError(key, f"not an IPv4 CIDR: {exc}") from None
    if net.prefixlen > max_prefix:
        raise SettingsError(key, f"{value} is smaller than /{max_prefix}")
    return str(net)


def _object(value: Any, key: str, fields: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SettingsError(key, f"expected an object with {', '.join(fields)}, got {value!r}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise SettingsError(f"{key}.{unknown[0]}", f"unknown field (known: {', '.join(fields)})")
    return value


# ---- the structured keys ----


def _node_pool(read: Reader) -> NodePool:
    key = "weir:nodePool"
    raw = _object(_get(read, key), key, ("machineType", "minNodes", "maxNodes", "diskSizeGb", "diskType"))

    def field(name: str, default: Any = _MISSING) -> Any:
        return _get(lambda _: raw.get(name, _MISSING), f"{key}.{name}", default)

    pool = NodePool(
        machine_type=_str(field("machineType"), f"{key}.machineType"),
        min_nodes=_int(field("minNodes"), f"{key}.minNodes", 1, 100),
        max_nodes=_int(field("maxNodes"), f"{key}.maxNodes", 1, 100),
        disk_size_gb=_int(field("diskSizeGb", 50), f"{key}.diskSizeGb", 10, 2000),
        disk_type=_choice(field("diskType", "pd-balanced"), f"{key}.diskType",
                          ("pd-standard", "pd-balanced", "pd-ssd")),
    )
    if pool.max_nodes < pool.min_nodes:
        raise SettingsError(f"{key}.maxNodes", f"{pool.max_nodes} is below minNodes {pool.min_nodes}")
    return pool


def _network(read: Reader) -> Network:
    key = "weir:network"
    defaults = {"nodesCidr": "10.10.0.0/20", "podsCidr": "10.20.0.0/14", "servicesCidr": "10.30.0.0/20",
                "masterCidr": "172.16.0.0/28"}
    raw = _object(_get(read, key, {}), key, tuple(defaults))
    values = {name: _cidr(raw.get(name, default), f"{key}.{name}") for name, default in defaults.items()}
    if ipaddress.IPv4Network(values["masterCidr"]).prefixlen != 28:
        raise SettingsError(f"{key}.masterCidr", f"GKE needs a /28 for the control plane, got {values['masterCidr']}")
    names = list(values)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if ipaddress.IPv4Network(values[a]).overlaps(ipaddress.IPv4Network(values[b])):
                raise SettingsError(f"{key}.{b}", f"{values[b]} overlaps {a} {values[a]}")
    return Network(values["nodesCidr"], values["podsCidr"], values["servicesCidr"], values["masterCidr"])


def _authorized_networks(read: Reader) -> tuple[AuthorizedNetwork, ...]:
    key = "weir:authorizedNetworks"
    raw = _get(read, key)
    if not isinstance(raw, list) or not raw:
        raise SettingsError(key, "expected a non-empty list of {name, cidr} (who may reach the API server)")
    out = []
    for i, item in enumerate(raw):
        entry = _object(item, f"{key}[{i}]", ("name", "cidr"))
        cidr = _cidr(entry.get("cidr"), f"{key}[{i}].cidr")
        if cidr == "0.0.0.0/0":
            raise SettingsError(f"{key}[{i}].cidr", "0.0.0.0/0 would make the API server public")
        out.append(AuthorizedNetwork(_str(entry.get("name"), f"{key}[{i}].name"), cidr))
    return tuple(out)


def _admin_users(read: Reader) -> tuple[str, ...]:
    key = "weir:adminUsers"
    raw = _get(read, key, [])
    if not isinstance(raw, list):
        raise SettingsError(key, f"expected a list of user e-mails, got {raw!r}")
    for i, user in enumerate(raw):
        if not isinstance(user, str) or "@" not in user:
            raise SettingsError(f"{key}[{i}]", f"expected a user e-mail, got {user!r}")
    return tuple(raw)


def _routing(read: Reader) -> dict[str, Any]:
    """The pinned release (`weir:release` + `weir:releaseDigest`), verified; else a scenario (`weir:routing`)."""
    config = {k: v for k in (releases.RELEASE_KEY, releases.DIGEST_KEY) if (v := read(k)) is not _MISSING}
    if config:
        if read("weir:routing") is not _MISSING:
            raise SettingsError(releases.RELEASE_KEY, "set `weir:release` or `weir:routing`, not both")
        try:
            pin = releases.parse_pin(config, "stack config")
            release = releases.ReleaseStore(ROOT).resolve(pin.ref, pin.digest, where="stack config")
        except releases.ReleaseError as exc:
            raise SettingsError(releases.RELEASE_KEY, str(exc).removeprefix("stack config: ")) from None
        return {"routing": release.ref, "routing_resources": release.resources}
    key = "weir:routing"
    name = _str(_get(read, key), key)
    if not (ROUTING_DIR / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in ROUTING_DIR.glob("*.yaml"))
        raise SettingsError(key, f"no stacks/routing/{name}.yaml (known: {', '.join(known)})")
    return {"routing": name, "routing_resources": tuple(routing.custom_resources(ROUTING_DIR / f"{name}.yaml"))}


def _outbound_policy(read: Reader) -> str:
    key = "weir:meshConfig"
    mesh_config = _get(read, key, {})
    mode = ((mesh_config or {}).get("outboundTrafficPolicy") or {}).get("mode", "ALLOW_ANY")
    return _choice(mode, f"{key}.outboundTrafficPolicy.mode", manifest_settings.OUTBOUND_POLICIES)


def _workload_cert_ttl(read: Reader) -> str:
    key = "weir:security"
    security = _get(read, key, {})
    raw = security.get("workloadCertTtl", "24h") if isinstance(security, Mapping) else security
    ttl = _str(raw, f"{key}.workloadCertTtl")
    try:  # the syntax `meshctl render` and the control plane's --workload-cert-ttl accept
        seconds = parse_duration(ttl)
    except ValueError:
        raise SettingsError(f"{key}.workloadCertTtl",
                            f"{ttl!r} does not match a duration such as 24h, 90m or 30s") from None
    if seconds <= 0:
        raise SettingsError(f"{key}.workloadCertTtl", f"expected a positive duration, got {ttl!r}")
    return ttl


def _otlp_endpoint(read: Reader) -> str | None:
    key = manifest_settings.OTLP_ENDPOINT_KEY
    endpoint = _get(read, key, None)
    problem = manifest_settings.otlp_endpoint_problem(endpoint) if endpoint is not None else None
    if problem is not None:
        raise SettingsError(key, problem)
    return endpoint


def from_reader(read: Reader, stack: str) -> StackSettings:
    """Build and validate the settings; `read` maps a full key to its parsed value (or `_MISSING`)."""
    return StackSettings(
        stack=stack,
        project=_str(_get(read, "gcp:project"), "gcp:project"),
        region=_str(_get(read, "gcp:region"), "gcp:region"),
        cluster_name=_str(_get(read, "weir:clusterName"), "weir:clusterName", _NAME),
        autopilot=_bool(_get(read, "weir:autopilot", False), "weir:autopilot"),
        node_pool=_node_pool(read),
        release_channel=_choice(_get(read, "weir:releaseChannel", "REGULAR"), "weir:releaseChannel",
                                RELEASE_CHANNELS),
        network=_network(read),
        authorized_networks=_authorized_networks(read),
        deletion_protection=_bool(_get(read, "weir:deletionProtection"), "weir:deletionProtection"),
        admin_users=_admin_users(read),
        image=_str(_get(read, "weir:image"), "weir:image"),
        registry=_str(_get(read, "weir:registry", "weir"), "weir:registry", _NAME),
        mtls_mode=_choice(_get(read, "weir:mtlsMode", "PERMISSIVE"), "weir:mtlsMode",
                          manifest_settings.MTLS_MODES),
        outbound_policy=_outbound_policy(read),
        **_routing(read),
        workload_cert_ttl=_workload_cert_ttl(read),
        otlp_endpoint=_otlp_endpoint(read),
    )


def from_mapping(config: Mapping[str, Any], stack: str) -> StackSettings:
    """From a stack file's `config:` mapping (already parsed YAML): tests and tools."""
    return from_reader(lambda key: config.get(key, _MISSING), stack)


def load() -> StackSettings:
    """From the running Pulumi program's config: the one place the program reads config."""
    import pulumi  # the program's dependency, not the tests' of this module

    configs: dict[str, pulumi.Config] = {}

    def read(key: str) -> Any:
        namespace, name = key.split(":", 1)
        raw = configs.setdefault(namespace, pulumi.Config(namespace)).get(name)
        if raw is None:
            return _MISSING
        try:  # Pulumi hands structured and scalar values over as JSON text
            return json.loads(raw)
        except ValueError:
            return raw

    return from_reader(read, pulumi.get_stack())
