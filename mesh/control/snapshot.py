"""An immutable snapshot of config + registry, with the lookup indexes built once.

Built by `mesh.control.push` after a debounced change (never read from live mutable state);
`mesh.control.builder.build_proxy_view` reads only this. Services unify registry Services and
ServiceEntry hosts (Istio's model.Service); hosts in resources are resolved to FQDNs here. The security
kinds are indexed by namespace, and every registry workload's effective PeerAuthentication is composed
once here (`mesh.control.security`), so endpoints carry their auto-mTLS flag without a lookup per build.
`MeshSettings` plays Istio's meshConfig: the root namespace, the trust domain, where gateway credentials
live; JWKS key sets arrive already fetched (`mesh.control.jwks` runs before the snapshot is taken).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import mesh.api as api
from mesh.control import registry, security
from mesh.view import model
from mesh.view import security as view_security

ALLOW_ANY = "ALLOW_ANY"
REGISTRY_ONLY = "REGISTRY_ONLY"
OUTBOUND_POLICIES = (ALLOW_ANY, REGISTRY_ONLY)
ROOT_NAMESPACE = "weir-system"  # default root config namespace (Istio's istio-system): mesh-wide policies

# Where a service's endpoints come from.
FROM_REGISTRY = "registry"
STATIC = "STATIC"
DNS = "DNS"
NONE = "NONE"


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class MeshSettings:
    """The meshConfig-like settings of one control plane, frozen into every snapshot."""

    root_namespace: str = ROOT_NAMESPACE  # mesh-wide PeerAuthentication/AuthorizationPolicy/...; DR fallback
    trust_domain: str = view_security.TRUST_DOMAIN  # SPIFFE IDs: spiffe://<trust domain>/ns/<ns>/sa/<sa>
    credentials_dir: str = "credentials"  # Gateway credentialName → <dir>/<name>/{tls.crt,tls.key,ca.crt}


DEFAULT_SETTINGS = MeshSettings()


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    target_port: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """One host that proxies can call: a registry Service, or one host of a ServiceEntry."""

    host: str  # FQDN (registry) or the ServiceEntry host as written (may be `*.example.com`)
    namespace: str
    ports: tuple[ServicePort, ...]
    resolution: str  # FROM_REGISTRY | STATIC | DNS | NONE
    selector: Mapping[str, str] | None = None  # registry selector, or ServiceEntry workloadSelector
    entry: Any = None  # the api.ServiceEntry, when from one

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)

    @property
    def mesh_external(self) -> bool:
        """A ServiceEntry whose `location` is not MESH_INTERNAL (MESH_EXTERNAL is the proto's zero value,
        so unset counts): Istio never turns on auto mTLS to it, whatever its endpoints run."""
        return self.entry is not None and self.entry.spec.location != "MESH_INTERNAL"


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    resources: tuple[Any, ...]
    registry: registry.RegistryState
    outbound_policy: str
    services: tuple[Service, ...]  # sorted by host
    services_by_host: Mapping[str, Service]
    virtual_services: tuple[Any, ...]  # sorted by (namespace, name)
    virtual_services_by_host: Mapping[str, tuple[Any, ...]]  # resolved host (FQDN or wildcard)
    destination_rules_by_host: Mapping[str, tuple[Any, ...]]
    gateways: tuple[Any, ...]
    gateways_by_name: Mapping[str, Any]  # "namespace/name"
    service_entries_by_host: Mapping[str, tuple[Any, ...]]
    workloads_by_label: Mapping[tuple[str, str], tuple[registry.Workload, ...]]
    settings: MeshSettings = DEFAULT_SETTINGS
    # Security kinds by namespace: PeerAuthentications oldest first (Istio's tie-break), the others by name.
    peer_authentications: Mapping[str, tuple[Any, ...]] = field(default_factory=_empty)
    authorization_policies: Mapping[str, tuple[Any, ...]] = field(default_factory=_empty)
    request_authentications: Mapping[str, tuple[Any, ...]] = field(default_factory=_empty)
    workload_mtls: Mapping[tuple[str, str], model.InboundMtls] = field(default_factory=_empty)  # (ns, workload name)
    jwks: Mapping[str, str] = field(default_factory=_empty)  # JWKS source (URI) → key set text, see mesh.control.jwks

    @property
    def root_namespace(self) -> str:
        return self.settings.root_namespace

    def resolve(self, host: str, namespace: str) -> str:
        """A host as written in a resource of `namespace` → the host the indexes use.
        A ServiceEntry host written as-is wins over Kubernetes short-name expansion."""
        if host in self.services_by_host or host in self.service_entries_by_host:
            return host
        return api.fqdn(host, namespace)

    def select_workloads(self, namespace: str, *selectors: Mapping[str, str] | None) -> tuple[registry.Workload, ...]:
        """Workloads of `namespace` whose labels contain every selector (all of them non-empty)."""
        merged: dict[str, str] = {}
        for selector in selectors:
            merged.update(selector or {})
        if not merged:
            return ()
        first = min(merged.items(), key=lambda kv: len(self.workloads_by_label.get(kv, ())))
        return tuple(
            w
            for w in self.workloads_by_label.get(first, ())
            if w.namespace == namespace and registry.labels_match(merged, w.labels)
        )


def build_snapshot(
    resources: Iterable[Any],
    registry_state: registry.RegistryState,
    outbound_policy: str = ALLOW_ANY,
    revision: int = 0,
    settings: MeshSettings = DEFAULT_SETTINGS,
    jwks: Mapping[str, str] | None = None,
) -> Snapshot:
    items = tuple(sorted(resources, key=lambda r: r.key))
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for r in items:
        by_kind[r.kind].append(r)
    entries = sorted(by_kind["ServiceEntry"], key=_ns_name)
    services = _services(registry_state, entries)
    services_by_host = {s.host: s for s in services}
    entries_by_host = _group((h, se) for se in entries for h in se.spec.hosts)

    def resolve(host: str, namespace: str) -> str:
        return host if host in services_by_host or host in entries_by_host else api.fqdn(host, namespace)

    virtual_services = tuple(sorted(by_kind["VirtualService"], key=_ns_name))
    gateways = tuple(sorted(by_kind["Gateway"], key=_ns_name))
    rules = sorted(by_kind["DestinationRule"], key=_ns_name)
    workloads = _group(((k, v), w) for w in registry_state.workloads for k, v in w.labels.items())
    peer = _by_namespace(by_kind["PeerAuthentication"], security.oldest_first)
    root = settings.root_namespace
    return Snapshot(
        revision=revision,
        resources=items,
        registry=registry_state,
        outbound_policy=outbound_policy,
        services=services,
        services_by_host=MappingProxyType(services_by_host),
        virtual_services=virtual_services,
        virtual_services_by_host=_group(
            (resolve(h, vs.namespace), vs) for vs in virtual_services for h in vs.spec.hosts or ()
        ),
        destination_rules_by_host=_group((resolve(dr.spec.host, dr.namespace), dr) for dr in rules),
        gateways=gateways,
        gateways_by_name=MappingProxyType({f"{g.namespace}/{g.name}": g for g in gateways}),
        service_entries_by_host=entries_by_host,
        workloads_by_label=workloads,
        settings=settings,
        peer_authentications=peer,
        authorization_policies=_by_namespace(by_kind["AuthorizationPolicy"], _ns_name),
        request_authentications=_by_namespace(by_kind["RequestAuthentication"], _ns_name),
        workload_mtls=MappingProxyType({
            (w.namespace, w.name): security.effective_mtls(peer, root, w.namespace, w.labels)
            for w in registry_state.workloads
        }),
        jwks=MappingProxyType(dict(sorted((jwks or {}).items()))),
    )


def _ns_name(r: Any) -> tuple[str, str]:
    return (r.namespace, r.name)


def _by_namespace(items: Iterable[Any], key: Any) -> Mapping[str, tuple[Any, ...]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        out[item.namespace].append(item)
    return MappingProxyType({ns: tuple(sorted(out[ns], key=key)) for ns in sorted(out)})


def _group(pairs: Iterable[tuple[Any, Any]]) -> Mapping[Any, tuple[Any, ...]]:
    out: dict[Any, list[Any]] = defaultdict(list)
    for key, value in pairs:
        if value not in out[key]:
            out[key].append(value)
    return MappingProxyType({k: tuple(v) for k, v in sorted(out.items())})


def _services(state: registry.RegistryState, entries: list[Any]) -> tuple[Service, ...]:
    out: dict[str, Service] = {}
    for svc in state.services:
        ports = tuple(ServicePort(p.name, p.port, p.target_port) for p in svc.ports)
        out[svc.fqdn] = Service(svc.fqdn, svc.namespace, ports, FROM_REGISTRY, svc.selector)
    for se in entries:  # sorted: the first ServiceEntry declaring a host keeps it; registry wins over both
        spec = se.spec
        ports = tuple(ServicePort(p.name or str(p.number), p.number, p.target_port) for p in spec.ports or ())
        resolution = spec.resolution or NONE
        resolution = DNS if resolution.startswith("DNS") or resolution == "DYNAMIC_DNS" else resolution
        selector = None
        if spec.workload_selector is not None:
            selector = MappingProxyType(dict(spec.workload_selector.labels or {}))
        for host in spec.hosts:
            out.setdefault(host, Service(host, se.namespace, ports, resolution, selector, se))
    return tuple(out[h] for h in sorted(out))
