"""A DestinationRule traffic policy: load balancing (incl. consistent hash, locality, warmup),
connection pool (circuit breaking), outlier detection, client TLS, tunnel, PROXY protocol and
retry budget, at destination, subset or port level."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mesh.api.errors import invalid
from mesh.api.types import Duration, Model, PortNumber, PortSelector, PositiveDuration

# The generated cookie's name, path and attributes go into a Set-Cookie header: no CR, LF or NUL (Envoy's
# HTTP_HEADER_NAME / HTTP_HEADER_VALUE rules for cookie attributes), or one could add response headers.
_HEADER_BREAKERS = frozenset("\r\n\x00")


def _header_safe(value: str | None) -> str | None:
    if value is not None and not _HEADER_BREAKERS.isdisjoint(value):
        raise invalid(f"invalid value {value!r}: CR, LF and NUL cannot go into a Set-Cookie header")
    return value


class HTTPCookieAttribute(Model):
    name: str = Field(min_length=1)
    value: str | None = None

    _safe = field_validator("name", "value")(_header_safe)


class HTTPCookie(Model):
    name: str = Field(min_length=1)
    path: str | None = None
    ttl: Duration | None = None  # 0s means a session cookie
    attributes: list[HTTPCookieAttribute] | None = None  # added to a generated cookie (mesh.proxy.headers)

    _safe = field_validator("name", "path")(_header_safe)


class RingHash(Model):
    minimum_ring_size: int | None = Field(default=None, ge=0)


class MagLev(Model):
    table_size: int | None = Field(default=None, ge=0)


class ConsistentHashLB(Model):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: int | None = Field(default=None, ge=0)  # deprecated by ringHash

    @model_validator(mode="after")
    def _oneofs(self) -> ConsistentHashLB:
        keys = [
            k
            for k in ("http_header_name", "http_cookie", "use_source_ip", "http_query_parameter_name")
            if getattr(self, k) is not None
        ]
        if len(keys) > 1:
            raise invalid(
                "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set"
            )
        if self.ring_hash is not None and self.maglev is not None:
            raise invalid("only one of ringHash or maglev may be set")
        return self


class LocalityDistribute(Model):
    from_: str | None = Field(default=None, alias="from")
    to: dict[str, int] | None = None

    @model_validator(mode="after")
    def _sum(self) -> LocalityDistribute:
        weights = (self.to or {}).values()
        if any(w < 0 for w in weights) or (self.to and sum(weights) != 100):
            raise invalid("locality weights in 'to' must be non-negative and sum to 100", at="to")
        return self


class LocalityFailover(Model):
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None

    @model_validator(mode="after")
    def _differs(self) -> LocalityFailover:
        if self.from_ and self.from_ == self.to:
            raise invalid("locality failover 'from' and 'to' must differ")
        return self


class LocalityLoadBalancerSetting(Model):
    distribute: list[LocalityDistribute] | None = None
    failover: list[LocalityFailover] | None = None
    failover_priority: list[str] | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> LocalityLoadBalancerSetting:
        if self.distribute and (self.failover or self.failover_priority):
            raise invalid("distribute cannot be set together with failover or failoverPriority")
        return self


class WarmupConfiguration(Model):
    duration: PositiveDuration
    minimum_percent: float | None = Field(default=None, ge=0, le=100)
    aggression: float | None = Field(default=None, ge=1)


SimpleLB = Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"]


class LoadBalancerSettings(Model):
    simple: SimpleLB | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    warmup_duration_secs: Duration | None = None  # deprecated by warmup
    warmup: WarmupConfiguration | None = None

    @model_validator(mode="after")
    def _one_policy(self) -> LoadBalancerSettings:
        if self.simple is not None and self.consistent_hash is not None:
            raise invalid("only one of simple or consistentHash may be set")
        return self


class TcpKeepalive(Model):
    probes: int | None = Field(default=None, ge=0)
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(Model):
    max_connections: int | None = Field(default=None, ge=0)
    connect_timeout: PositiveDuration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: PositiveDuration | None = None
    idle_timeout: Duration | None = None


class HTTPSettings(Model):
    http1_max_pending_requests: int | None = Field(default=None, ge=0)
    http2_max_requests: int | None = Field(default=None, ge=0)
    max_requests_per_connection: int | None = Field(default=None, ge=0)
    max_retries: int | None = Field(default=None, ge=0)
    idle_timeout: Duration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: int | None = Field(default=None, ge=0)


class ConnectionPoolSettings(Model):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Model):
    consecutive_errors: int | None = Field(default=None, ge=0)  # deprecated: consecutive5xxErrors
    split_external_local_origin_errors: bool | None = None
    consecutive_local_origin_failures: int | None = Field(default=None, ge=0)
    consecutive_gateway_errors: int | None = Field(default=None, ge=0)
    consecutive_5xx_errors: int | None = Field(default=None, ge=0, alias="consecutive5xxErrors")
    interval: PositiveDuration | None = None
    base_ejection_time: PositiveDuration | None = None
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)
    min_health_percent: int | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _local_origin(self) -> OutlierDetection:
        if self.consecutive_local_origin_failures and not self.split_external_local_origin_errors:
            raise invalid("consecutiveLocalOriginFailures is set, but splitExternalLocalOriginErrors is not: "
                          "local-origin failures are only counted apart when split",
                          at="consecutiveLocalOriginFailures")
        return self


class ClientTLSSettings(Model):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] | None = None
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] | None = None
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None

    @model_validator(mode="after")
    def _mode_fields(self) -> ClientTLSSettings:
        files = {
            "clientCertificate": self.client_certificate,
            "privateKey": self.private_key,
            "caCertificates": self.ca_certificates,
        }
        if self.mode == "ISTIO_MUTUAL" and (any(files.values()) or self.credential_name):
            raise invalid("cannot set certificates or credentialName when mode is ISTIO_MUTUAL")
        if self.mode == "MUTUAL" and not self.credential_name:
            for field in ("clientCertificate", "privateKey"):
                if not files[field]:
                    raise invalid(
                        f"{field} is required for MUTUAL TLS unless credentialName is set", at=field
                    )
        return self


class PortTrafficPolicy(Model):
    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None

    @model_validator(mode="after")
    def _port(self) -> PortTrafficPolicy:
        if self.port is None or self.port.number is None:
            raise invalid("port level settings must specify a port number", at="port")
        return self


class TunnelSettings(Model):
    protocol: Literal["CONNECT", "POST"] | None = None
    target_host: str = Field(min_length=1)
    target_port: PortNumber


class ProxyProtocol(Model):
    version: Literal["V1", "V2"] | None = None


class RetryBudget(Model):
    percent: float | None = Field(default=None, ge=0, le=100)
    min_retry_concurrency: int | None = Field(default=None, ge=0)


class TrafficPolicy(Model):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] | None = None
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None

    @model_validator(mode="after")
    def _unique_ports(self) -> TrafficPolicy:
        seen: set[int | None] = set()
        for i, p in enumerate(self.port_level_settings or []):
            number = p.port.number if p.port else None
            if number in seen:
                raise invalid(
                    f"duplicate value: port {number} appears more than once",
                    at=f"portLevelSettings[{i}].port.number",
                )
            seen.add(number)
        return self
