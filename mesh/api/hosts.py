"""Host names: Kubernetes short-name resolution (`fqdn`) and Istio's rules for hosts, wildcards,
gateway `namespace/host` entries, IP addresses, subnets and `exportTo` values.

The `check_*` functions return an error message, or "" when the value is valid, so each model can
attach the message to its own field path.
"""

from __future__ import annotations

import ipaddress
import re

CLUSTER_DOMAIN = "svc.cluster.local"

_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$")
_MAX_HOST_LEN = 255
_MAX_LABEL_LEN = 63

# `name.namespace` and `www.example.com` are ambiguous in Kubernetes DNS (the search path tries both).
# A one-dot name whose last label is a common public top-level domain is taken as external; any other
# one-dot name is read as `service.namespace`.
_PUBLIC_TLDS = frozenset(
    "com org net io dev app edu gov mil int info biz co us uk de fr jp cn ru in eu ai cloud local internal "
    "example test invalid localhost".split()
)


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_ip_or_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def is_dns_label(value: str) -> bool:
    return len(value) <= _MAX_LABEL_LEN and bool(_DNS_LABEL.match(value))


def fqdn(host: str, namespace: str) -> str:
    """Resolve a Kubernetes short name the way a sidecar in `namespace` would.

    `books` -> `books.<ns>.svc.cluster.local`; `books.bookinfo` -> `books.bookinfo.svc.cluster.local`;
    `books.bookinfo.svc` -> `books.bookinfo.svc.cluster.local`. Wildcards, IPs, names with 3+ dots
    and names in another domain are returned unchanged.
    """
    if "*" in host or is_ip(host) or not host:
        return host
    name = host.rstrip(".")
    labels = name.split(".")
    if len(labels) == 1:
        return f"{name}.{namespace}.{CLUSTER_DOMAIN}"
    if len(labels) == 2 and labels[1].lower() not in _PUBLIC_TLDS:
        return f"{name}.{CLUSTER_DOMAIN}"
    if len(labels) == 3 and labels[2] == "svc":
        return f"{name}.cluster.local"
    return name


def _check_labels(domain: str, host: str) -> str:
    parts = domain.split(".")
    if parts and parts[-1].isdigit():
        return f"domain name {host!r} invalid (top level domain {parts[-1]!r} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return ""  # a trailing dot (absolute name) is allowed
        if not is_dns_label(label):
            return f"domain name {host!r} invalid (label {label!r} invalid)"
    return ""


def check_wildcard_domain(host: str) -> str:
    """Istio's ValidateWildcardDomain: a DNS name whose first label may be `*` or start with `*`."""
    if not host:
        return "host must not be empty"
    if len(host) > _MAX_HOST_LEN:
        return f"domain name {host!r} too long (max {_MAX_HOST_LEN})"
    first, dot, rest = host.partition(".")
    bare = first[1:] if first.startswith("*") else first
    if first != "*" and (len(first) > _MAX_LABEL_LEN or not is_dns_label(bare)):
        return f"domain name {host!r} invalid (label {first!r} invalid); a wildcard may only be a leading '*'"
    if dot:
        return _check_labels(rest, host)
    return ""


def check_service_host(host: str) -> str:
    """VirtualService/DestinationRule hosts: wildcard domains or IP addresses."""
    if host and is_ip(host):
        return ""
    return check_wildcard_domain(host)


def check_gateway_host(host: str) -> str:
    """Gateway server hosts: `[namespace/]dnsName`; namespace may be `*`, `.` or `~`."""
    ns, slash, name = host.partition("/")
    if not slash:
        ns, name = "*", host
    if ns not in ("*", ".", "~") and not is_dns_label(ns):
        return f"invalid namespace {ns!r} in host {host!r}"
    if name == "*":
        return ""
    return check_wildcard_domain(name)


def check_export_to(value: str) -> str:
    if value in (".", "*", "~") or is_dns_label(value):
        return ""
    return f"invalid exportTo value {value!r}: expected '.', '*' or a namespace name"


def is_wildcard(host: str) -> bool:
    return host.startswith("*")


def gateway_ref(ref: str, namespace: str) -> str:
    """A VirtualService `gateways` entry, relative to the VirtualService's namespace, as "namespace/name";
    the reserved `mesh` (all sidecars) stays `mesh`."""
    if ref == "mesh":
        return ref
    ns, slash, name = ref.partition("/")
    return f"{ns}/{name}" if slash else f"{namespace}/{ref}"
