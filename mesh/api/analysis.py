"""Cross-resource checks (`meshctl analyze`), reported with Istio's analyzer codes where one fits:
IST0101 ReferencedResourceNotFound (subset or gateway), IST0109 ConflictingMeshGatewayVirtualServiceHosts;
plus WEIR0001 for fields (or values of a field) Weir parses but does not enforce yet and WEIR0002 for
valid Istio that Weir refuses to apply (e.g. AuthorizationPolicy action CUSTOM)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mesh.api.destinationrule import DestinationRule
from mesh.api.enforced_values import unenforced_values
from mesh.api.gateway import Gateway
from mesh.api.hosts import fqdn, gateway_ref
from mesh.api.resource import Resource
from mesh.api.support import unenforced_fields, unsupported
from mesh.api.virtualservice import MESH_GATEWAY, VirtualService

Level = Literal["Error", "Warning", "Info"]

REFERENCED_RESOURCE_NOT_FOUND = "IST0101"
CONFLICTING_MESH_GATEWAY_VS_HOSTS = "IST0109"
UNENFORCED_FIELD = "WEIR0001"
UNSUPPORTED = "WEIR0002"
_NOT_ENFORCED = "is accepted but not enforced by Weir yet"


@dataclass(frozen=True, slots=True)
class Message:
    code: str
    level: Level
    resource_key: str
    text: str

    def __str__(self) -> str:
        return f"{self.level} [{self.code}] ({self.resource_key}) {self.text}"


def _vs_destinations(vs: VirtualService) -> Iterable[tuple[str, str | None]]:
    for rule in vs.spec.http or []:
        for d in rule.route or []:
            yield d.destination.host, d.destination.subset
        if rule.mirror is not None:
            yield rule.mirror.host, rule.mirror.subset
        for m in rule.mirrors or []:
            yield m.destination.host, m.destination.subset
    for rule in [*(vs.spec.tls or []), *(vs.spec.tcp or [])]:
        for d in rule.route or []:
            yield d.destination.host, d.destination.subset


def _subsets(resources: list[Resource]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in resources:
        if isinstance(r, DestinationRule):
            out[fqdn(r.spec.host, r.namespace)].update(s.name for s in r.spec.subsets or [])
    return out


def _missing_references(resources: list[Resource]) -> list[Message]:
    subsets = _subsets(resources)
    gateways = {f"{r.namespace}/{r.name}" for r in resources if isinstance(r, Gateway)}
    out: list[Message] = []
    for vs in (r for r in resources if isinstance(r, VirtualService)):
        reported: set[str] = set()
        for host, subset in _vs_destinations(vs):
            ref = f"{host}+{subset}"
            if subset and subset not in subsets.get(fqdn(host, vs.namespace), ()) and ref not in reported:
                reported.add(ref)
                out.append(
                    Message(
                        REFERENCED_RESOURCE_NOT_FOUND,
                        "Error",
                        vs.key,
                        f'Referenced host+subset in destinationrule not found: "{ref}"',
                    )
                )
        refs = list(vs.spec.gateways or [])
        refs += [g for rule in vs.spec.http or [] for m in rule.match or [] for g in m.gateways or []]
        for ref in dict.fromkeys(refs):
            if ref != MESH_GATEWAY and gateway_ref(ref, vs.namespace) not in gateways:
                out.append(
                    Message(
                        REFERENCED_RESOURCE_NOT_FOUND,
                        "Error",
                        vs.key,
                        f'Referenced gateway not found: "{ref}"',
                    )
                )
    return out


def _mesh_host_conflicts(resources: list[Resource]) -> list[Message]:
    owners: dict[str, list[VirtualService]] = defaultdict(list)
    for vs in (r for r in resources if isinstance(r, VirtualService)):
        if MESH_GATEWAY in vs.bound_gateways():
            for host in dict.fromkeys(fqdn(h, vs.namespace) for h in vs.spec.hosts or []):
                owners[host].append(vs)
    out: list[Message] = []
    for host, services in owners.items():
        if len(services) < 2:
            continue
        names = ",".join(f"{vs.namespace}/{vs.name}" for vs in services)
        for vs in services:
            out.append(
                Message(
                    CONFLICTING_MESH_GATEWAY_VS_HOSTS,
                    "Error",
                    vs.key,
                    f"The VirtualServices {names} associated with mesh gateway define the same host {host} which "
                    "can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices "
                    "into a single resource.",
                )
            )
    return out


def unenforced_messages(resources: Iterable[Resource]) -> list[Message]:
    items = list(resources)
    fields = [
        Message(UNENFORCED_FIELD, "Warning", r.key, f"{path} {_NOT_ENFORCED}")
        for r in items
        for path in unenforced_fields(r)
    ]
    values = [
        Message(UNENFORCED_FIELD, "Warning", r.key, f"{path} {value} {_NOT_ENFORCED}: {why}")
        for r in items
        for path, value, why in unenforced_values(r)
    ]
    return fields + values


def unsupported_messages(resources: Iterable[Resource]) -> list[Message]:
    return [
        Message(UNSUPPORTED, "Error", r.key, f"{path}: {reason}; apply will refuse it")
        for r in resources
        for path, reason in unsupported(r)
    ]


def analyze(resources: Iterable[Resource]) -> list[Message]:
    """Every message for this set of resources, errors first, in a stable order.

    Resources with the same key replace earlier ones, as repeated `apply`s would."""
    items = list({r.key: r for r in resources}.values())
    messages = (
        _missing_references(items)
        + _mesh_host_conflicts(items)
        + unsupported_messages(items)
        + unenforced_messages(items)
    )
    rank = {"Error": 0, "Warning": 1, "Info": 2}
    return sorted(messages, key=lambda m: (rank[m.level], m.resource_key, m.code, m.text))
