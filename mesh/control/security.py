"""PeerAuthentication and RequestAuthentication → one proxy's `mesh.view.model.Security`.

Selection follows Istio's `getConfigsForWorkload`: a proxy gets the policies of its own namespace (no
selector: all its workloads; a selector: matching labels) and those of the mesh root namespace (no
selector: every workload of the mesh; a selector: matching workloads in every namespace). A policy with
`targetRef(s)` attaches to a waypoint or a Gateway-API gateway, neither of which Weir has: it applies to
no proxy. PeerAuthentication composes as `ComposePeerAuthentication` does: mesh → namespace → workload,
UNSET inheriting from the level above. AuthorizationPolicy compiles in `mesh.control.authorization`;
JWKS text was fetched before the snapshot (`mesh.control.jwks`). `mesh.control.builder` calls `build`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from mesh.control import authorization, registry
from mesh.control import node as node_mod
from mesh.view import model
from mesh.view import security as view_security

if TYPE_CHECKING:
    from mesh.control import snapshot

log = logging.getLogger(__name__)

UNSET = "UNSET"
DEFAULT_MTLS = model.InboundMtls()  # PERMISSIVE on every port, as in Istio when no policy applies
OPENID_CONFIGURATION = "/.well-known/openid-configuration"

# The key set a jwtRule gets when its JWKS cannot be had (Istio's FakeJwks): a valid RSA public key whose
# private half was thrown away, so every token of that issuer fails verification and nothing else breaks.
FAKE_JWKS = json.dumps({"keys": [{
    "kty": "RSA", "kid": "weir-unresolved-jwks", "alg": "RS256", "use": "sig", "e": "AQAB",
    "n": "0egrNaT6I5XecqT6dc-R3fULiPLHrsu_ivFbm0W8oLP1zK0_jNIbnjcKzTY_cqNlUEXPcU7G_lQkK9EYPi7Jm5xsv99SEiLIPs1m"
         "wBRutouuiQ1YHpa1ZtlvnjGkKgX5h3pH6ld7A4j1HQetivsYXg0muDmhdSLUCDQR64ExnP0_0m7LabeyDtB-uJUOcw00gUMRwe8d4S"
         "oQJrP9NAfQjUBvM-VWVV7ChW6L_ynsiWI61sSX3zsqIQmmDT4hSi94vcEzp6cYYNIs6Lt1gqm-CJpxZyBeZT_K4M6W1bCW-ZIggAIp"
         "r34Ox04Fa-opiAPVEuxgP8_KdThgDqIbw4fNvw",
}]}, separators=(",", ":"), sort_keys=True)


def build(snap: snapshot.Snapshot, node: node_mod.Node) -> model.Security:
    """The Security part of one proxy's view. Gateways keep the default inbound mTLS (Istio does not
    apply PeerAuthentication to gateway listeners) but are selected for authz and JWT like workloads."""
    root = snap.root_namespace
    mtls = DEFAULT_MTLS
    if node.role == node_mod.SIDECAR:
        mtls = effective_mtls(snap.peer_authentications, root, node.namespace, node.labels)
    policies = (
        authorization.compile_policy(p)
        for p in select(snap.authorization_policies, root, node.namespace, node.labels)
    )
    return model.Security(
        trust_domain=snap.settings.trust_domain,
        mtls=mtls,
        policies=tuple(p for p in policies if p is not None),
        jwt_rules=tuple(
            rule
            for ra in select(snap.request_authentications, root, node.namespace, node.labels)
            for rule in jwt_rules(ra, snap.jwks)
        ),
    )


# -- selection -----------------------------------------------------------------------------------------


def selector_labels(spec: Any) -> Mapping[str, str]:
    """A policy's `selector.matchLabels`; empty when unset (`selector: {}` selects like no selector)."""
    selector = getattr(spec, "selector", None)
    return (selector.match_labels or {}) if selector is not None else {}


def has_target_refs(spec: Any) -> bool:
    return bool(getattr(spec, "target_ref", None) or getattr(spec, "target_refs", None))


def select(
    by_namespace: Mapping[str, tuple[Any, ...]], root: str, namespace: str, labels: Mapping[str, str]
) -> tuple[Any, ...]:
    """AuthorizationPolicy/RequestAuthentication for a workload, sorted by namespace/name."""
    out = []
    for ns in dict.fromkeys((root, namespace)):
        for policy in by_namespace.get(ns, ()):
            if has_target_refs(policy.spec):
                log.debug("%s: targetRef policies attach to waypoints/gateways Weir does not run", policy.key)
                continue
            if registry.labels_match(selector_labels(policy.spec), labels):
                out.append(policy)
    return tuple(sorted(out, key=lambda p: (p.namespace, p.name)))


def oldest_first(resource: Any) -> tuple[Any, ...]:
    """Istio's order among competing policies: creationTimestamp, then name. A resource without a
    timestamp (local files carry none) counts as the newest, so names decide among those."""
    stamp = _timestamp(resource.metadata.creation_timestamp)
    return (stamp is None, stamp or 0.0, resource.namespace, resource.name)


def _timestamp(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return None


# -- PeerAuthentication ----------------------------------------------------------------------------------


def effective_mtls(
    by_namespace: Mapping[str, tuple[Any, ...]], root: str, namespace: str, labels: Mapping[str, str]
) -> model.InboundMtls:
    """Istio's ComposePeerAuthentication for one workload. `by_namespace` lists each namespace's
    policies oldest first, so the first match at each level is the one Istio keeps."""
    mesh = ns_wide = workload = None
    for policy in by_namespace.get(root, ()):
        if not selector_labels(policy.spec):
            mesh = mesh or policy
    if namespace != root:
        for policy in by_namespace.get(namespace, ()):
            selector = selector_labels(policy.spec)
            if not selector:
                ns_wide = ns_wide or policy
            elif registry.labels_match(selector, labels):
                workload = workload or policy
    mode = view_security.PERMISSIVE
    for policy in (mesh, ns_wide, workload):
        if policy is not None:
            mode = _mode(policy.spec.mtls, mode)
    port_modes: tuple[tuple[int, str], ...] = ()
    if workload is not None and workload.spec.port_level_mtls:
        port_modes = tuple(
            (int(port), _mode(mtls, mode)) for port, mtls in sorted(workload.spec.port_level_mtls.items())
        )
    if (mode, port_modes) == (DEFAULT_MTLS.mode, ()):
        return DEFAULT_MTLS
    return model.InboundMtls(mode, port_modes)


def _mode(mtls: Any, inherited: str) -> str:
    mode = getattr(mtls, "mode", None) if mtls is not None else None
    return inherited if mode in (None, UNSET) else mode


def endpoint_mtls(snap: snapshot.Snapshot, workload: registry.Workload, port: int) -> bool:
    """Auto mTLS: does this workload's sidecar accept mutual TLS on its port `port`?"""
    mtls = snap.workload_mtls.get((workload.namespace, workload.name), DEFAULT_MTLS)
    return mtls.mode_for(port) != view_security.DISABLE


def identity(snap: snapshot.Snapshot, workload: registry.Workload) -> str:
    return view_security.spiffe_id(workload.namespace, workload.service_account, snap.settings.trust_domain)


# -- RequestAuthentication ---------------------------------------------------------------------------------


def jwks_source(rule: Any) -> str | None:
    """Where a jwtRule's key set comes from when it is not inline: `jwksUri`, else the issuer's OpenID
    discovery document (as istiod does); None when neither can be fetched."""
    if rule.jwks:
        return None
    if rule.jwks_uri:
        return rule.jwks_uri
    if (rule.issuer or "").startswith(("https://", "http://")):
        return rule.issuer.rstrip("/") + OPENID_CONFIGURATION
    return None


def jwks_sources(resources: Iterable[Any]) -> dict[str, float | None]:
    """Every JWKS source the RequestAuthentications need → the longest fetch `timeout` (s) asked for."""
    out: dict[str, float | None] = {}
    for ra in resources:
        if ra.kind != "RequestAuthentication":
            continue
        for rule in ra.spec.jwt_rules or ():
            source = jwks_source(rule)
            if source is not None:
                timeout = rule.timeout.seconds if rule.timeout is not None else None
                known = out.get(source)
                out[source] = timeout if known is None else max(known, timeout or 0.0)
    return out


def jwt_rules(ra: Any, resolved: Mapping[str, str]) -> tuple[model.JwtRule, ...]:
    name = f"{ra.namespace}/{ra.name}"
    out = []
    for rule in ra.spec.jwt_rules or ():
        out.append(model.JwtRule(
            issuer=rule.issuer or "",
            jwks=_key_set(name, rule, resolved),
            policy=name,
            audiences=tuple(rule.audiences or ()),
            from_headers=tuple((h.name.lower(), h.prefix or "") for h in rule.from_headers or ()),
            from_params=tuple(rule.from_params or ()),
            from_cookies=tuple(rule.from_cookies or ()),
            forward_original_token=bool(rule.forward_original_token),
            output_payload_to_header=rule.output_payload_to_header or "",
            output_claim_to_headers=tuple((c.header, c.claim) for c in rule.output_claim_to_headers or ()),
        ))
    return tuple(out)


def _key_set(policy: str, rule: Any, resolved: Mapping[str, str]) -> str:
    if rule.jwks:  # validated at the edge (mesh.api)
        return rule.jwks
    source = jwks_source(rule)
    text = resolved.get(source) if source is not None else None
    if text is None:
        log.debug("%s: issuer %s: no key set from %s; its tokens are rejected", policy, rule.issuer, source)
        return FAKE_JWKS
    return text
