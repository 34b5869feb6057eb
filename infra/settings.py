"""One stack's settings, read once from Pulumi config and validated at the edge: `load()` → `StackSettings`.

Owns which keys a stack has, their defaults, and the rules across keys (node-pool bounds, non-overlapping
CIDRs, a pinned release or a routing scenario); each value is checked with `infra.config_keys`, so a bad or
missing one raises its `SettingsError` naming the key and `pulumi up` fails before anything is created.
Downstream components trust the frozen result. `StackSettings.manifests` is the
`mesh.manifests.settings.ManifestSettings` the Kubernetes objects are rendered from (the same contract
`meshctl render` fills from the stack file).
Next: `__main__` hands these to `infra.cluster`, `infra.platform`, `infra.bookinfo` and `infra.routing`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mesh.manifests.settings as manifest_settings
from infra import config_keys as keys
from mesh.api.types import parse_duration
from mesh.manifests import releases, routing

ROOT = Path(__file__).resolve().parents[1]
ROUTING_DIR = ROOT / "stacks" / "routing"
RELEASE_CHANNELS = ("RAPID", "REGULAR", "STABLE")  # "no pinned latest": the channel picks the version
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")  # GKE cluster / AR repository names


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


# ---- the structured keys ----


def _node_pool(read: keys.Reader) -> NodePool:
    key = "weir:nodePool"
    raw = keys.fields(keys.get(read, key), key,
                      ("machineType", "minNodes", "maxNodes", "diskSizeGb", "diskType"))

    def field(name: str, default: Any = keys.MISSING) -> Any:
        return keys.get(lambda _: raw.get(name, keys.MISSING), f"{key}.{name}", default)

    pool = NodePool(
        machine_type=keys.string(field("machineType"), f"{key}.machineType"),
        min_nodes=keys.integer(field("minNodes"), f"{key}.minNodes", 1, 100),
        max_nodes=keys.integer(field("maxNodes"), f"{key}.maxNodes", 1, 100),
        disk_size_gb=keys.integer(field("diskSizeGb", 50), f"{key}.diskSizeGb", 10, 2000),
        disk_type=keys.choice(field("diskType", "pd-balanced"), f"{key}.diskType",
                              ("pd-standard", "pd-balanced", "pd-ssd")),
    )
    if pool.max_nodes < pool.min_nodes:
        raise keys.SettingsError(f"{key}.maxNodes", f"{pool.max_nodes} is below minNodes {pool.min_nodes}")
    return pool


def _network(read: keys.Reader) -> Network:
    key = "weir:network"
    defaults = {"nodesCidr": "10.10.0.0/20", "podsCidr": "10.20.0.0/14", "servicesCidr": "10.30.0.0/20",
                "masterCidr": "172.16.0.0/28"}
    raw = keys.fields(keys.get(read, key, {}), key, tuple(defaults))
    values = {name: keys.cidr(raw.get(name, default), f"{key}.{name}") for name, default in defaults.items()}
    if ipaddress.IPv4Network(values["masterCidr"]).prefixlen != 28:
        raise keys.SettingsError(f"{key}.masterCidr",
                                 f"GKE needs a /28 for the control plane, got {values['masterCidr']}")
    names = list(values)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if ipaddress.IPv4Network(values[a]).overlaps(ipaddress.IPv4Network(values[b])):
                raise keys.SettingsError(f"{key}.{b}", f"{values[b]} overlaps {a} {values[a]}")
    return Network(values["nodesCidr"], values["podsCidr"], values["servicesCidr"], values["masterCidr"])


def _authorized_networks(read: keys.Reader) -> tuple[AuthorizedNetwork, ...]:
    key = "weir:authorizedNetworks"
    raw = keys.get(read, key)
    if not isinstance(raw, list) or not raw:
        raise keys.SettingsError(key,
                                 "expected a non-empty list of {name, cidr} (who may reach the API server)")
    out = []
    for i, item in enumerate(raw):
        entry = keys.fields(item, f"{key}[{i}]", ("name", "cidr"))
        cidr = keys.cidr(entry.get("cidr"), f"{key}[{i}].cidr")
        if cidr == "0.0.0.0/0":
            raise keys.SettingsError(f"{key}[{i}].cidr", "0.0.0.0/0 would make the API server public")
        out.append(AuthorizedNetwork(keys.string(entry.get("name"), f"{key}[{i}].name"), cidr))
    return tuple(out)


def _admin_users(read: keys.Reader) -> tuple[str, ...]:
    key = "weir:adminUsers"
    raw = keys.get(read, key, [])
    if not isinstance(raw, list):
        raise keys.SettingsError(key, f"expected a list of user e-mails, got {raw!r}")
    for i, user in enumerate(raw):
        if not isinstance(user, str) or "@" not in user:
            raise keys.SettingsError(f"{key}[{i}]", f"expected a user e-mail, got {user!r}")
    return tuple(raw)


def _routing(read: keys.Reader) -> dict[str, Any]:
    """The pinned release (`weir:release` + `weir:releaseDigest`), verified; else a scenario (`weir:routing`)."""
    config = {k: v for k in (releases.RELEASE_KEY, releases.DIGEST_KEY)
              if (v := read(k)) is not keys.MISSING}
    if config:
        if read("weir:routing") is not keys.MISSING:
            raise keys.SettingsError(releases.RELEASE_KEY, "set `weir:release` or `weir:routing`, not both")
        try:
            pin = releases.parse_pin(config, "stack config")
            release = releases.ReleaseStore(ROOT).resolve(pin.ref, pin.digest, where="stack config")
        except releases.ReleaseError as exc:
            raise keys.SettingsError(releases.RELEASE_KEY, str(exc).removeprefix("stack config: ")) from None
        return {"routing": release.ref, "routing_resources": release.resources}
    key = "weir:routing"
    name = keys.string(keys.get(read, key), key)
    if not (ROUTING_DIR / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in ROUTING_DIR.glob("*.yaml"))
        raise keys.SettingsError(key, f"no stacks/routing/{name}.yaml (known: {', '.join(known)})")
    return {"routing": name, "routing_resources": tuple(routing.custom_resources(ROUTING_DIR / f"{name}.yaml"))}


def _outbound_policy(read: keys.Reader) -> str:
    key = "weir:meshConfig"
    mesh_config = keys.get(read, key, {})
    mode = ((mesh_config or {}).get("outboundTrafficPolicy") or {}).get("mode", "ALLOW_ANY")
    return keys.choice(mode, f"{key}.outboundTrafficPolicy.mode", manifest_settings.OUTBOUND_POLICIES)


def _workload_cert_ttl(read: keys.Reader) -> str:
    key = "weir:security"
    security = keys.get(read, key, {})
    raw = security.get("workloadCertTtl", "24h") if isinstance(security, Mapping) else security
    ttl = keys.string(raw, f"{key}.workloadCertTtl")
    try:  # the syntax `meshctl render` and the control plane's --workload-cert-ttl accept
        seconds = parse_duration(ttl)
    except ValueError:
        raise keys.SettingsError(f"{key}.workloadCertTtl",
                                 f"{ttl!r} does not match a duration such as 24h, 90m or 30s") from None
    if seconds <= 0:
        raise keys.SettingsError(f"{key}.workloadCertTtl", f"expected a positive duration, got {ttl!r}")
    return ttl


def _otlp_endpoint(read: keys.Reader) -> str | None:
    key = manifest_settings.OTLP_ENDPOINT_KEY
    endpoint = keys.get(read, key, None)
    problem = manifest_settings.otlp_endpoint_problem(endpoint) if endpoint is not None else None
    if problem is not None:
        raise keys.SettingsError(key, problem)
    return endpoint


def from_reader(read: keys.Reader, stack: str) -> StackSettings:
    """Build and validate the settings; `read` maps a full key to its parsed value (or `keys.MISSING`)."""
    return StackSettings(
        stack=stack,
        project=keys.string(keys.get(read, "gcp:project"), "gcp:project"),
        region=keys.string(keys.get(read, "gcp:region"), "gcp:region"),
        cluster_name=keys.string(keys.get(read, "weir:clusterName"), "weir:clusterName", _NAME),
        autopilot=keys.boolean(keys.get(read, "weir:autopilot", False), "weir:autopilot"),
        node_pool=_node_pool(read),
        release_channel=keys.choice(keys.get(read, "weir:releaseChannel", "REGULAR"), "weir:releaseChannel",
                                    RELEASE_CHANNELS),
        network=_network(read),
        authorized_networks=_authorized_networks(read),
        deletion_protection=keys.boolean(keys.get(read, "weir:deletionProtection"),
                                         "weir:deletionProtection"),
        admin_users=_admin_users(read),
        image=keys.string(keys.get(read, "weir:image"), "weir:image"),
        registry=keys.string(keys.get(read, "weir:registry", "weir"), "weir:registry", _NAME),
        mtls_mode=keys.choice(keys.get(read, "weir:mtlsMode", "PERMISSIVE"), "weir:mtlsMode",
                              manifest_settings.MTLS_MODES),
        outbound_policy=_outbound_policy(read),
        **_routing(read),
        workload_cert_ttl=_workload_cert_ttl(read),
        otlp_endpoint=_otlp_endpoint(read),
    )


def from_mapping(config: Mapping[str, Any], stack: str) -> StackSettings:
    """From a stack file's `config:` mapping (already parsed YAML): tests and tools."""
    return from_reader(lambda key: config.get(key, keys.MISSING), stack)


def load() -> StackSettings:
    """From the running Pulumi program's config: the one place the program reads config."""
    import pulumi  # the program's dependency, not the tests' of this module

    configs: dict[str, pulumi.Config] = {}

    def read(key: str) -> Any:
        namespace, name = key.split(":", 1)
        raw = configs.setdefault(namespace, pulumi.Config(namespace)).get(name)
        if raw is None:
            return keys.MISSING
        try:  # Pulumi hands structured and scalar values over as JSON text
            return json.loads(raw)
        except ValueError:
            return raw

    return from_reader(read, pulumi.get_stack())
