"""PeerAuthentication: whether a workload's sidecar accepts plain text, mutual TLS or both
(`mtls.mode`), for the mesh, a namespace or the selected workloads, and per workload port.

Istio's defaults: no policy, or mode UNSET, inherits from the namespace, then the mesh; PERMISSIVE
when nothing sets it. `portLevelMtls` keys are workload (target) ports and need a selector.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from mesh.api.errors import invalid
from mesh.api.resource import SECURITY_GROUP, SECURITY_VERSIONS, Resource
from mesh.api.types import Model, WorkloadSelector

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


class PeerAuthenticationMutualTLS(Model):
    mode: MtlsMode | None = None


def _port_keys(value: Any) -> Any:
    """Map keys are ports, written as YAML integers (`8090:`) or strings (`"80":`)."""
    if not isinstance(value, dict):
        return value  # pydantic reports the wrong type
    if not value:
        raise invalid("port level mTLS, if defined, must have at least one element")
    out: dict[int, Any] = {}
    for key, tls in value.items():
        text = str(key)
        if isinstance(key, bool) or not (isinstance(key, int) or _INTEGER.match(text)):
            raise invalid(f"invalid port {text!r}: not a number", at=f"[{text}]")
        port = int(key)
        if not 1 <= port <= 65535:
            raise invalid(f"port must be between 1-65535, got {port}", at=f"[{text}]")
        if port in out:
            raise invalid(f"duplicate value: port {port} appears more than once", at=f"[{text}]")
        out[port] = tls
    return out


class PeerAuthenticationSpec(Model):
    selector: WorkloadSelector | None = None
    mtls: PeerAuthenticationMutualTLS | None = None
    port_level_mtls: Annotated[dict[int, PeerAuthenticationMutualTLS], BeforeValidator(_port_keys)] | None = (
        None
    )

    @model_validator(mode="after")
    def _port_level_needs_selector(self) -> PeerAuthenticationSpec:
        if self.port_level_mtls is not None and not (self.selector and self.selector.match_labels):
            raise invalid(
                "portLevelMtls requires selector: a mesh or namespace policy cannot have port level mTLS",
                at="portLevelMtls",
            )
        return self


class PeerAuthentication(Resource):
    KIND = "PeerAuthentication"
    GROUP = SECURITY_GROUP
    VERSIONS = SECURITY_VERSIONS

    kind: Literal["PeerAuthentication"]
    spec: PeerAuthenticationSpec = Field(default_factory=PeerAuthenticationSpec)
