"""The security part of a proxy view: how the proxy accepts, originates and authorizes connections.

What the control plane compiles from PeerAuthentication, DestinationRule `tls`, Gateway server `tls`,
AuthorizationPolicy and RequestAuthentication, already selected for ONE proxy (no selectors or namespaces
left to evaluate). Certificates are not here: a proxy's own key and certificate come from the CA over the
control channel (`mesh.proxy.certagent`), never inside a view. `mesh.view.model` embeds these types.
"""

from __future__ import annotations

from dataclasses import dataclass

TRUST_DOMAIN = "cluster.local"

# PeerAuthentication mtls.mode, resolved (UNSET never reaches a proxy).
STRICT = "STRICT"
PERMISSIVE = "PERMISSIVE"
DISABLE = "DISABLE"

# DestinationRule / Gateway tls.mode.
TLS_DISABLE = "DISABLE"
TLS_SIMPLE = "SIMPLE"
TLS_MUTUAL = "MUTUAL"
TLS_ISTIO_MUTUAL = "ISTIO_MUTUAL"
TLS_OPTIONAL_MUTUAL = "OPTIONAL_MUTUAL"  # Gateway only: a client certificate is asked for, verified if sent

# AuthorizationPolicy actions a proxy evaluates (CUSTOM is refused at apply).
ALLOW = "ALLOW"
DENY = "DENY"
AUDIT = "AUDIT"


def spiffe_id(namespace: str, service_account: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True, slots=True)
class InboundMtls:
    """Effective PeerAuthentication of this workload: `mode` for every port, except those in
    `port_modes` (portLevelMtls, keyed by the workload's own port number, as in Istio)."""

    mode: str = PERMISSIVE
    port_modes: tuple[tuple[int, str], ...] = ()

    def mode_for(self, port: int | None) -> str:
        for number, mode in self.port_modes:
            if number == port:
                return mode
        return self.mode


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """TLS a client proxy originates to a cluster (DestinationRule trafficPolicy.tls, portLevelSettings,
    subset). ISTIO_MUTUAL uses the proxy's workload certificate and checks the peer's SPIFFE ID against
    `subject_alt_names` or, when empty, the endpoint's `identity`. SIMPLE/MUTUAL use the files named here
    (system roots when `ca_file` is empty) and check `subject_alt_names` (or `sni`) as host names."""

    mode: str = TLS_DISABLE
    sni: str = ""
    subject_alt_names: tuple[str, ...] = ()
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class ServerTls:
    """One Gateway server's `tls` on a listener: the certificate for `hosts` (chosen by SNI; the first
    server is the default). MUTUAL requires a client certificate signed by `ca_file`; OPTIONAL_MUTUAL asks
    for one and, when the client sends it, verifies it the same way (chain and `subject_alt_names`), but
    lets a client without one in. ISTIO_MUTUAL uses the gateway's workload certificate and the mesh root."""

    mode: str
    hosts: tuple[str, ...] = ("*",)
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    subject_alt_names: tuple[str, ...] = ()  # (OPTIONAL_)MUTUAL: accepted client cert SANs (empty: any)
    min_protocol: str = ""  # "TLSV1_2", "TLSV1_3" or "" (library default)
    max_protocol: str = ""  # "TLSV1_2", "TLSV1_3" or "" (no cap)
    cipher_suites: tuple[str, ...] = ()  # TLS 1.2 suites offered, OpenSSL names (empty: the default list)
    # (OPTIONAL_)MUTUAL pinning, lower-case hex SHA-256 digests: a client certificate must match one of
    # either list when any is set (Envoy's verify_certificate_spki / verify_certificate_hash).
    spki_sha256: tuple[str, ...] = ()  # of the certificate's SubjectPublicKeyInfo
    cert_sha256: tuple[str, ...] = ()  # of the whole certificate (DER)


@dataclass(frozen=True, slots=True)
class AuthzSource:
    """One `from.source`: every non-empty field must match (AND); values are Istio's strings
    (exact, "prefix*", "*suffix", "*"). Principals are SPIFFE IDs without "spiffe://"."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()  # addresses or CIDRs of the connection's peer
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()  # the original client (X-Forwarded-For), as in Istio
    not_remote_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzOperation:
    """One `to.operation`; ports are strings as in Istio's API."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzCondition:
    """One `when`: `key` is Istio's attribute ("request.headers[x-token]", "source.principal",
    "request.auth.claims[groups]", ...); the value must match one of `values` and none of `not_values`."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzRule:
    """A rule matches when any source AND any operation AND every condition match; an empty list
    is not a constraint (so a rule with nothing in it matches every request)."""

    sources: tuple[AuthzSource, ...] = ()
    operations: tuple[AuthzOperation, ...] = ()
    conditions: tuple[AuthzCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzPolicy:
    """An AuthorizationPolicy selected for this proxy; `name` is "namespace/name". A policy without
    rules matches nothing (so `spec: {}`, an ALLOW with no rules, denies every request)."""

    name: str
    action: str = ALLOW
    rules: tuple[AuthzRule, ...] = ()
    dry_run: bool = False  # istio.io/dry-run annotation: evaluated and counted, never enforced


@dataclass(frozen=True, slots=True)
class JwtRule:
    """One RequestAuthentication jwtRule; `jwks` is the JSON Web Key Set text (the control plane reads a
    file or URI and inlines it, as istiod does for Envoy). No `from_headers`/`from_params` means
    Istio's defaults: `Authorization: Bearer <token>` and `?access_token=`."""

    issuer: str
    jwks: str
    policy: str = ""  # "namespace/name" of the RequestAuthentication, for errors and dumps
    audiences: tuple[str, ...] = ()
    from_headers: tuple[tuple[str, str], ...] = ()  # (header name lower-case, prefix)
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    forward_original_token: bool = False
    output_payload_to_header: str = ""
    output_claim_to_headers: tuple[tuple[str, str], ...] = ()  # (header, claim)


@dataclass(frozen=True, slots=True)
class Security:
    """Everything a proxy enforces on what it receives. A gateway uses `policies` and `jwt_rules` too;
    `mtls` applies to a sidecar's inbound listener only."""

    trust_domain: str = TRUST_DOMAIN
    mtls: InboundMtls = InboundMtls()
    policies: tuple[AuthzPolicy, ...] = ()
    jwt_rules: tuple[JwtRule, ...] = ()


DEFAULT_SECURITY = Security()
