"""Weir's Istio-compatible configuration model: the single truth every other package reads.

Parse with `load_text`/`load_files` (validated, frozen resources or one `ConfigError`), write back with
`dump`, check a set of resources with `analyze`. Imports nothing else from the project.
"""

from mesh.api.analysis import Message, analyze
from mesh.api.destinationrule import DestinationRule, DestinationRuleSpec, Subset
from mesh.api.errors import ConfigError
from mesh.api.gateway import Gateway, GatewaySpec, Port, Server, ServerTLSSettings
from mesh.api.hosts import CLUSTER_DOMAIN, fqdn, gateway_ref
from mesh.api.httproute import (
    Abort,
    CorsPolicy,
    Delay,
    Delegate,
    Destination,
    HeaderOperations,
    Headers,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPMirrorPolicy,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    HTTPRoute,
    HTTPRouteDestination,
)
from mesh.api.loader import KINDS, dump, load_document, load_files, load_text
from mesh.api.resource import ObjectMeta, Resource
from mesh.api.serviceentry import ServiceEntry, ServiceEntrySpec, ServicePort, WorkloadEntry
from mesh.api.support import ENFORCED, ENFORCED_TRAFFIC_POLICY, unenforced_fields
from mesh.api.trafficpolicy import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    ConsistentHashLB,
    LoadBalancerSettings,
    OutlierDetection,
    TrafficPolicy,
)
from mesh.api.types import Duration, Percent, PortSelector, StringMatch
from mesh.api.virtualservice import RouteDestination, TCPRoute, TLSRoute, VirtualService, VirtualServiceSpec

__all__ = [
    "ENFORCED",
    "ENFORCED_TRAFFIC_POLICY",
    "KINDS",
    "Abort",
    "ClientTLSSettings",
    "ConfigError",
    "ConnectionPoolSettings",
    "ConsistentHashLB",
    "CorsPolicy",
    "Delay",
    "Delegate",
    "Destination",
    "DestinationRule",
    "DestinationRuleSpec",
    "Duration",
    "Gateway",
    "GatewaySpec",
    "HTTPDirectResponse",
    "HTTPFaultInjection",
    "HTTPMatchRequest",
    "HTTPMirrorPolicy",
    "HTTPRedirect",
    "HTTPRetry",
    "HTTPRewrite",
    "HTTPRoute",
    "HTTPRouteDestination",
    "HeaderOperations",
    "Headers",
    "LoadBalancerSettings",
    "Message",
    "ObjectMeta",
    "OutlierDetection",
    "Percent",
    "Port",
    "PortSelector",
    "Resource",
    "RouteDestination",
    "Server",
    "ServerTLSSettings",
    "ServiceEntry",
    "ServiceEntrySpec",
    "ServicePort",
    "StringMatch",
    "Subset",
    "TCPRoute",
    "TLSRoute",
    "TrafficPolicy",
    "VirtualService",
    "VirtualServiceSpec",
    "WorkloadEntry",
    "analyze",
    "dump",
    "fqdn",
    "gateway_ref",
    "CLUSTER_DOMAIN",
    "load_document",
    "load_files",
    "load_text",
    "unenforced_fields",
]
