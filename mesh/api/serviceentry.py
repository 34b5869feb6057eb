"""ServiceEntry: services added to the mesh's registry (external APIs, VMs) with their hosts,
addresses, ports, resolution mode and endpoints (inline WorkloadEntries)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from mesh.api.errors import invalid
from mesh.api.hosts import check_wildcard_domain, is_ip, is_ip_or_cidr, is_wildcard
from mesh.api.resource import Resource
from mesh.api.types import ExportTo, Labels, Model, PortNumber

Resolution = Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]


class ServicePort(Model):
    # Range is checked by hand so the message is Istio's ("port must be between 1-65535").
    number: int
    protocol: str | None = None
    name: str | None = None
    target_port: int | None = None

    @field_validator("number", "target_port")
    @classmethod
    def _range(cls, port: int | None) -> int | None:
        if port is not None and not 1 <= port <= 65535:
            raise invalid(f"port must be between 1-65535, got {port}")
        return port


class WorkloadEntry(Model):
    address: str | None = None
    ports: dict[str, PortNumber] | None = None
    labels: Labels | None = None
    network: str | None = None
    locality: str | None = None
    weight: int | None = Field(default=None, ge=0)
    service_account: str | None = None


class ServiceEntryWorkloadSelector(Model):
    labels: Labels | None = None


def _flow_ipv6(value: Any) -> Any:
    # PyYAML reads an IPv6 address ending in "::" inside a flow list (`[1.2.3.4, 2001:db8::]`) as
    # the mapping {"2001:db8:": None}; Kubernetes' YAML reads the text. Take the text back.
    if isinstance(value, dict) and len(value) == 1:
        ((key, val),) = value.items()
        if val is None and isinstance(key, str) and ":" in key:
            return f"{key}:"
    return value


class ServiceEntrySpec(Model):
    hosts: list[str]
    addresses: list[Annotated[str, BeforeValidator(_flow_ipv6)]] | None = None
    ports: list[ServicePort] | None = None
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Resolution | None = None
    endpoints: list[WorkloadEntry] | None = None
    workload_selector: ServiceEntryWorkloadSelector | None = None
    export_to: ExportTo | None = None
    subject_alt_names: list[str] | None = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        if not hosts:
            raise invalid("at least one host is required")
        for i, host in enumerate(hosts):
            if host == "*":
                raise invalid("hostname cannot be wildcard", at=f"[{i}]")
            if problem := check_wildcard_domain(host):
                raise invalid(problem, at=f"[{i}]")
        return hosts

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, addresses: list[str] | None) -> list[str] | None:
        for i, address in enumerate(addresses or []):
            if not is_ip_or_cidr(address):
                raise invalid(f"invalid address {address!r}: expected an IP address or CIDR", at=f"[{i}]")
        return addresses

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[ServicePort] | None) -> list[ServicePort] | None:
        names: set[str] = set()
        numbers: set[int] = set()
        for i, port in enumerate(ports or []):
            if port.name is not None:
                if port.name in names:
                    raise invalid(f"Duplicate value: port name {port.name!r}", at=f"[{i}].name")
                names.add(port.name)
            if port.number in numbers:
                raise invalid(f"port number cannot be duplicated: {port.number}", at=f"[{i}].number")
            numbers.add(port.number)
        return ports

    @model_validator(mode="after")
    def _resolution(self) -> ServiceEntrySpec:
        resolution = self.resolution or "NONE"
        endpoints = self.endpoints or []
        if self.workload_selector is not None and self.endpoints is not None:
            raise invalid("only one of WorkloadSelector or Endpoints can be set", at="workloadSelector")
        if any("/" in a for a in self.addresses or []) and resolution not in ("NONE", "STATIC"):
            raise invalid("CIDR addresses are allowed only for NONE/STATIC resolution types", at="addresses")
        if resolution == "NONE" and self.endpoints is not None:
            raise invalid("NONE mode cannot set endpoints", at="endpoints")
        if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
            raise invalid("DNS_ROUND_ROBIN mode cannot have multiple endpoints", at="endpoints")
        if resolution == "STATIC":
            if not endpoints and self.workload_selector is None:
                raise invalid("STATIC resolution needs endpoints or a workloadSelector", at="endpoints")
            for i, ep in enumerate(endpoints):
                if not ep.address or not (is_ip(ep.address) or ep.address.startswith("unix://")):
                    raise invalid(
                        f"STATIC endpoint address {ep.address!r} must be an IP address",
                        at=f"endpoints[{i}].address",
                    )
        if resolution in ("DNS", "DNS_ROUND_ROBIN") and not endpoints:
            for i, host in enumerate(self.hosts):
                if is_wildcard(host):
                    raise invalid(
                        f"wildcard host {host!r} needs endpoints when resolution is {resolution}",
                        at=f"hosts[{i}]",
                    )
        port_names = {p.name for p in self.ports or []}
        for i, ep in enumerate(endpoints):
            if ep.address is None and self.workload_selector is None:
                raise invalid("endpoint address is required", at=f"endpoints[{i}].address")
            for name in ep.ports or {}:
                if name not in port_names:
                    raise invalid(
                        f"endpoint port {name!r} is not defined by the service entry",
                        at=f"endpoints[{i}].ports.{name}",
                    )
        return self


class ServiceEntry(Resource):
    KIND = "ServiceEntry"

    kind: Literal["ServiceEntry"]
    spec: ServiceEntrySpec
