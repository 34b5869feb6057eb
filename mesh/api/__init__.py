"""Weir's Istio-compatible configuration model: the single truth every other package reads.

Parse with `load_text`/`load_files` (validated, frozen resources or one `ConfigError`), write back with
`dump`, check a set of resources with `analyze`. Imports nothing else from the project.
"""

from mesh.api.analysis import Message, analyze
from mesh.api.authorizationpolicy import (
    AuthorizationPolicy,
    AuthorizationPolicySpec,
    Condition,
    ExtensionProvider,
    Operation,
    Rule,
    RuleFrom,
    RuleTo,
    Source,
)
from mesh.api.cors import CorsPolicy
from mesh.api.destinationrule import DestinationRule, DestinationRuleSpec, Subset
from mesh.api.enforced_values import dropped_server, unenforced_values
from mesh.api.errors import ConfigError
from mesh.api.gateway import Gateway, GatewaySpec, Port, Server, ServerTLSSettings
from mesh.api.hosts import CLUSTER_DOMAIN, fqdn, gateway_ref
from mesh.api.httproute import (
    Abort,
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
from mesh.api.peerauthentication import (
    PeerAuthentication,
    PeerAuthenticationMutualTLS,
    PeerAuthenticationSpec,
)
from mesh.api.requestauthentication import (
    ClaimToHeader,
    JWTHeader,
    JWTRule,
    RequestAuthentication,
    RequestAuthenticationSpec,
)
from mesh.api.resource import ObjectMeta, Resource
from mesh.api.selection import PolicyTargetReference
from mesh.api.serviceentry import ServiceEntry, ServiceEntrySpec, ServicePort, WorkloadEntry
from mesh.api.support import (
    ENFORCED,
    ENFORCED_TRAFFIC_POLICY,
    refuse_unsupported,
    unenforced_fields,
    unsupported,
)
from mesh.api.trafficpolicy import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    ConsistentHashLB,
    LoadBalancerSettings,
    OutlierDetection,
    TrafficPolicy,
)
from mesh.api.types import Duration, Percent, PortSelector, StringMatch, WorkloadSelector
from mesh.api.virtualservice import RouteDestination, TCPRoute, TLSRoute, VirtualService, VirtualServiceSpec

__all__ = [
    "CLUSTER_DOMAIN",
    "ENFORCED",
    "ENFORCED_TRAFFIC_POLICY",
    "KINDS",
    "Abort",
    "AuthorizationPolicy",
    "AuthorizationPolicySpec",
    "ClaimToHeader",
    "ClientTLSSettings",
    "Condition",
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
    "ExtensionProvider",
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
    "JWTHeader",
    "JWTRule",
    "LoadBalancerSettings",
    "Message",
    "ObjectMeta",
    "Operation",
    "OutlierDetection",
    "PeerAuthentication",
    "PeerAuthenticationMutualTLS",
    "PeerAuthenticationSpec",
    "Percent",
    "PolicyTargetReference",
    "Port",
    "PortSelector",
    "RequestAuthentication",
    "RequestAuthenticationSpec",
    "Resource",
    "RouteDestination",
    "Rule",
    "RuleFrom",
    "RuleTo",
    "Server",
    "ServerTLSSettings",
    "ServiceEntry",
    "ServiceEntrySpec",
    "ServicePort",
    "Source",
    "StringMatch",
    "Subset",
    "TCPRoute",
    "TLSRoute",
    "TrafficPolicy",
    "VirtualService",
    "VirtualServiceSpec",
    "WorkloadEntry",
    "WorkloadSelector",
    "analyze",
    "dropped_server",
    "dump",
    "fqdn",
    "gateway_ref",
    "load_document",
    "load_files",
    "load_text",
    "refuse_unsupported",
    "unenforced_fields",
    "unenforced_values",
    "unsupported",
]
