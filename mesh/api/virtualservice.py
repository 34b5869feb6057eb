"""VirtualService: hosts, gateways, ordered http/tls/tcp rules and exportTo, with Istio's
resource-level checks (hosts, delegates, TLS/TCP route shape)."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from mesh.api.errors import invalid
from mesh.api.hosts import check_service_host, is_ip_or_cidr
from mesh.api.httproute import Destination, HTTPRoute, check_weights
from mesh.api.resource import Resource
from mesh.api.types import ExportTo, Labels, Model, PortNumber

MESH_GATEWAY = "mesh"


class RouteDestination(Model):
    destination: Destination
    weight: int | None = None


def _check_subnets(subnets: list[str] | None) -> list[str] | None:
    for i, subnet in enumerate(subnets or []):
        if not is_ip_or_cidr(subnet):
            raise invalid(f"{subnet!r} is not an IP address or CIDR subnet", at=f"[{i}]")
    return subnets


class L4MatchAttributes(Model):
    destination_subnets: list[str] | None = None
    port: PortNumber | None = None
    source_subnet: str | None = None  # hidden from Istio's docs, still in its schema
    source_labels: Labels | None = None
    gateways: list[str] | None = None
    source_namespace: str | None = None

    @field_validator("destination_subnets")
    @classmethod
    def _subnets(cls, subnets: list[str] | None) -> list[str] | None:
        return _check_subnets(subnets)


class TLSMatchAttributes(Model):
    sni_hosts: list[str]
    destination_subnets: list[str] | None = None
    port: PortNumber | None = None
    source_labels: Labels | None = None
    gateways: list[str] | None = None
    source_namespace: str | None = None

    @field_validator("sni_hosts")
    @classmethod
    def _sni(cls, hosts: list[str]) -> list[str]:
        if not hosts:
            raise invalid("TLS match must have at least one SNI host")
        for i, host in enumerate(hosts):
            if problem := check_service_host(host):
                raise invalid(problem, at=f"[{i}]")
        return hosts

    @field_validator("destination_subnets")
    @classmethod
    def _subnets(cls, subnets: list[str] | None) -> list[str] | None:
        return _check_subnets(subnets)


def _route_weights(route: list[RouteDestination] | None) -> list[RouteDestination] | None:
    if not route:
        raise invalid("route is required")
    check_weights([d.weight for d in route])
    return route


class TLSRoute(Model):
    match: list[TLSMatchAttributes]
    route: list[RouteDestination] | None = None

    @field_validator("match")
    @classmethod
    def _match(cls, match: list[TLSMatchAttributes]) -> list[TLSMatchAttributes]:
        if not match:
            raise invalid("TLS route must have at least one match condition")
        return match

    @field_validator("route")
    @classmethod
    def _route(cls, route: list[RouteDestination] | None) -> list[RouteDestination] | None:
        return _route_weights(route)

    @model_validator(mode="after")
    def _has_route(self) -> TLSRoute:
        if not self.route:
            raise invalid("route is required", at="route")
        return self


class TCPRoute(Model):
    match: list[L4MatchAttributes] | None = None
    route: list[RouteDestination] | None = None

    @field_validator("route")
    @classmethod
    def _route(cls, route: list[RouteDestination] | None) -> list[RouteDestination] | None:
        return _route_weights(route)

    @model_validator(mode="after")
    def _has_route(self) -> TCPRoute:
        if not self.route:
            raise invalid("route is required", at="route")
        return self


class VirtualServiceSpec(Model):
    hosts: list[str] | None = None
    gateways: list[str] | None = None
    http: list[HTTPRoute] | None = None
    tls: list[TLSRoute] | None = None
    tcp: list[TCPRoute] | None = None
    export_to: ExportTo | None = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str] | None) -> list[str] | None:
        for i, host in enumerate(hosts or []):
            if host == MESH_GATEWAY:
                raise invalid("'mesh' is reserved and cannot be used as a host", at=f"[{i}]")
            if problem := check_service_host(host):
                raise invalid(problem, at=f"[{i}]")
        return hosts

    @field_validator("gateways")
    @classmethod
    def _gateways(cls, gateways: list[str] | None) -> list[str] | None:
        for i, gw in enumerate(gateways or []):
            if not gw:
                raise invalid("gateway name must not be empty", at=f"[{i}]")
        return gateways

    @model_validator(mode="after")
    def _shape(self) -> VirtualServiceSpec:
        if not (self.http or self.tls or self.tcp):
            raise invalid("http, tcp or tls must be provided in virtual service")
        if not self.hosts:
            # Istio reads a VirtualService without hosts as a delegate, reachable only through
            # another VirtualService's `delegate`: it may carry http rules and nothing else.
            for field, value in (("gateways", self.gateways), ("tls", self.tls), ("tcp", self.tcp)):
                if value:
                    raise invalid(
                        f"virtual service must have at least one host (a delegate without hosts "
                        f"cannot have {field})",
                        at="hosts",
                    )
        return self

    @property
    def is_delegate(self) -> bool:
        return not self.hosts


class VirtualService(Resource):
    KIND = "VirtualService"

    kind: Literal["VirtualService"]
    spec: VirtualServiceSpec

    def bound_gateways(self) -> list[str]:
        """Gateway names this rule applies to; `mesh` (all sidecars) when none are listed."""
        return list(self.spec.gateways or [MESH_GATEWAY])
