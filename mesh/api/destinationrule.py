"""DestinationRule: the host, its traffic policy, named subsets (versions), exportTo and workload
selector. Traffic policy details live in `trafficpolicy.py`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mesh.api.errors import invalid
from mesh.api.hosts import check_service_host, is_dns_label
from mesh.api.resource import Resource
from mesh.api.trafficpolicy import TrafficPolicy
from mesh.api.types import ExportTo, Labels, Model, ScalarStr, WorkloadSelector


class LabelSelectorRequirement(Model):
    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[ScalarStr] | None = None


class LabelSelector(Model):
    match_labels: Labels | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class Subset(Model):
    name: str
    labels: Labels | None = None
    traffic_policy: TrafficPolicy | None = None
    # Not in Istio's published API, but used by Istio's own test data (destination-rule-subsets.yaml);
    # accepted so that data loads, and reported as unenforced.
    selector: LabelSelector | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        # Subset names become part of Envoy cluster names (`outbound|80|v1|host`): DNS labels only.
        if not is_dns_label(name) or name != name.lower():
            raise invalid(
                f"invalid subset name {name!r}: must be a DNS label (lower-case letters, digits, '-')"
            )
        return name


class DestinationRuleSpec(Model):
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] | None = None
    export_to: ExportTo | None = None
    workload_selector: WorkloadSelector | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        if problem := check_service_host(host):
            raise invalid(problem)
        return host

    @field_validator("subsets")
    @classmethod
    def _unique(cls, subsets: list[Subset] | None) -> list[Subset] | None:
        seen: set[str] = set()
        for i, subset in enumerate(subsets or []):
            if subset.name in seen:
                raise invalid(
                    f"duplicate value: subset name {subset.name!r} appears more than once", at=f"[{i}].name"
                )
            seen.add(subset.name)
        return subsets

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets or [] if s.name == name), None)


class DestinationRule(Resource):
    KIND = "DestinationRule"

    kind: Literal["DestinationRule"]
    spec: DestinationRuleSpec
