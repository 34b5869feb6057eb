"""The proxy's node metadata, as sent in every discovery request (docs/architecture.md).

`parse_node` is the edge for this input: the builder and the discovery bookkeeping trust a `Node`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SIDECAR = "sidecar"
GATEWAY = "gateway"
ROLES = (SIDECAR, GATEWAY)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class NodeError(ValueError):
    """Node metadata the control plane cannot use (answered with 400)."""


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    role: str = SIDECAR
    namespace: str = "default"
    workload: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    service_account: str = "default"
    ports: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # "app", "inbound", "outbound", "admin", ...
    address: str = ""  # the proxy's pod IP in a cluster ("" locally: everything is on loopback)

    @property
    def app_port(self) -> int | None:
        return self.ports.get("app")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "namespace": self.namespace,
            "workload": self.workload,
            "labels": dict(self.labels),
            "serviceAccount": self.service_account,
            "ports": dict(self.ports),
            **({"address": self.address} if self.address else {}),
        }


def make_node(
    id: str,
    role: str = SIDECAR,
    namespace: str = "default",
    workload: str = "",
    labels: Mapping[str, str] | None = None,
    service_account: str = "default",
    ports: Mapping[str, int] | None = None,
    address: str = "",
) -> Node:
    return Node(
        id=id,
        role=role,
        namespace=namespace,
        workload=workload,
        labels=MappingProxyType(dict(sorted((labels or {}).items()))),
        service_account=service_account,
        ports=MappingProxyType(dict(sorted((ports or {}).items()))),
        address=address,
    )


def parse_node(data: Any) -> Node:
    if not isinstance(data, dict):
        raise NodeError("node: expected an object")
    node_id = data.get("id")
    if not isinstance(node_id, str) or not node_id:
        raise NodeError("node.id: required, a non-empty string")
    role = data.get("role") or SIDECAR
    if role not in ROLES:
        raise NodeError(f"node.role: expected one of {', '.join(ROLES)}, got {role!r}")
    labels = data.get("labels") or {}
    ports = data.get("ports") or {}
    if not isinstance(labels, dict) or not isinstance(ports, dict):
        raise NodeError("node.labels and node.ports must be objects")
    try:
        port_map = {str(k): int(v) for k, v in ports.items() if v is not None}  # a gateway has no app port
    except (TypeError, ValueError):
        raise NodeError("node.ports: every value must be a port number") from None
    address = data.get("address") or ""
    if address:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise NodeError(f"node.address: expected an IP address, got {address!r}") from None
    return make_node(
        id=node_id,
        role=role,
        namespace=str(data.get("namespace") or "default"),
        workload=str(data.get("workload") or ""),
        labels={str(k): str(v) for k, v in labels.items()},
        service_account=str(data.get("serviceAccount") or "default"),
        ports=port_map,
        address=address,
    )
