"""Gateway: the servers (port, hosts, TLS) a gateway workload listens on, and the label selector
that picks those workloads."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal

from pydantic import field_validator, model_validator

from mesh.api.errors import invalid
from mesh.api.hosts import check_gateway_host
from mesh.api.resource import Resource
from mesh.api.types import Labels, Model, PortNumber

# Istio's protocol names (matched case-insensitively, as Istio does: the corpus writes `tls`).
PROTOCOLS = frozenset("HTTP HTTPS GRPC GRPC-WEB HTTP2 HTTP_PROXY MONGO MYSQL REDIS TCP TLS UDP".split())
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})

TLSProtocolVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]
_VERSION_ORDER = ("TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")
# Istio's ValidCipherSuites (BoringSSL's names, PSK suites left out): the TLS 1.2 suites `cipherSuites` names.
CIPHER_SUITES = frozenset(
    "ECDHE-ECDSA-AES128-GCM-SHA256 ECDHE-RSA-AES128-GCM-SHA256 ECDHE-ECDSA-AES256-GCM-SHA384 "
    "ECDHE-RSA-AES256-GCM-SHA384 ECDHE-ECDSA-CHACHA20-POLY1305 ECDHE-RSA-CHACHA20-POLY1305 "
    "ECDHE-ECDSA-AES128-SHA ECDHE-RSA-AES128-SHA ECDHE-ECDSA-AES256-SHA ECDHE-RSA-AES256-SHA "
    "AES128-GCM-SHA256 AES256-GCM-SHA384 AES128-SHA AES256-SHA DES-CBC3-SHA".split())
# verifyCertificateHash: hex SHA-256, plain or in Envoy's colon-separated form.
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}|(?:[0-9a-fA-F]{2}:){31}[0-9a-fA-F]{2}")


def cipher_names(entry: str) -> list[str]:
    """The suite names of one `cipherSuites` entry: itself, or the names of a BoringSSL `[A|B]` group."""
    return entry[1:-1].split("|") if entry.startswith("[") and entry.endswith("]") else [entry]


class Port(Model):
    number: PortNumber
    protocol: str
    name: str | None = None
    target_port: PortNumber | None = None

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, protocol: str) -> str:
        if protocol.upper() not in PROTOCOLS:
            raise invalid(f"invalid protocol {protocol!r}: expected one of {', '.join(sorted(PROTOCOLS))}")
        return protocol


class TLSCertificate(Model):
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None


class ServerTLSSettings(Model):
    https_redirect: bool | None = None
    mode: (
        Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"]
        | None
    ) = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    credential_names: list[str] | None = None
    tls_certificates: list[TLSCertificate] | None = None
    subject_alt_names: list[str] | None = None
    verify_certificate_spki: list[str] | None = None
    verify_certificate_hash: list[str] | None = None
    min_protocol_version: TLSProtocolVersion | None = None
    max_protocol_version: TLSProtocolVersion | None = None
    cipher_suites: list[str] | None = None

    @field_validator("verify_certificate_hash")
    @classmethod
    def _hashes(cls, hashes: list[str] | None) -> list[str] | None:
        for i, value in enumerate(hashes or []):
            if not _HEX_SHA256.fullmatch(value):
                raise invalid(f"{value!r} is not a hex-encoded SHA-256 hash (64 hex digits, or 32 pairs "
                              "separated by colons)", at=f"[{i}]")
        return hashes

    @field_validator("verify_certificate_spki")
    @classmethod
    def _spkis(cls, spkis: list[str] | None) -> list[str] | None:
        for i, value in enumerate(spkis or []):
            try:
                digest = base64.b64decode(value, validate=True)
            except binascii.Error:
                digest = b""
            if len(digest) != 32:
                raise invalid(f"{value!r} is not a base64-encoded SHA-256 hash", at=f"[{i}]")
        return spkis

    @property
    def cipher_suites_in_effect(self) -> tuple[str, ...]:
        """Istio's FilterCipherSuites with BoringSSL's `[A|B]` groups opened: the named suites, in order, once
        each. Other entries (an unknown name, alone or in a group; OpenSSL expressions such as `!X` or `ALL`,
        which Istio passes on to Envoy) are left out; mesh.api.enforced_values warns about them."""
        groups = [cipher_names(entry) for entry in self.cipher_suites or ()]
        known = (name for names in groups if CIPHER_SUITES.issuperset(names) for name in names)
        return tuple(dict.fromkeys(known))

    @model_validator(mode="after")
    def _version_range(self) -> ServerTLSSettings:
        """Envoy refuses a maximum below the minimum when it loads the listener; Weir at apply."""
        low, high = self.min_protocol_version, self.max_protocol_version
        if low in _VERSION_ORDER and high in _VERSION_ORDER and \
                _VERSION_ORDER.index(high) < _VERSION_ORDER.index(low):
            raise invalid(f"maxProtocolVersion {high} is below minProtocolVersion {low}",
                          at="maxProtocolVersion")
        return self

    @model_validator(mode="after")
    def _mode_fields(self) -> ServerTLSSettings:
        files = (self.server_certificate, self.private_key, self.ca_certificates)
        if self.mode == "ISTIO_MUTUAL":
            if any(files) or self.credential_name or self.credential_names:
                raise invalid("ISTIO_MUTUAL TLS cannot have a server certificate, key, CA or credentialName")
            return self
        if (
            self.mode in (None, "PASSTHROUGH", "AUTO_PASSTHROUGH")
            or self.credential_name
            or self.credential_names
            or self.tls_certificates
        ):
            return self
        if not self.server_certificate:
            raise invalid(f"{self.mode} TLS requires a server certificate", at="serverCertificate")
        if not self.private_key:
            raise invalid(f"{self.mode} TLS requires a private key", at="privateKey")
        if self.mode in ("MUTUAL", "OPTIONAL_MUTUAL") and not self.ca_certificates:
            raise invalid("MUTUAL TLS requires a client CA bundle", at="caCertificates")
        return self


class Server(Model):
    port: Port
    bind: str | None = None
    hosts: list[str]
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        if not hosts:
            raise invalid("server config must contain at least one host")
        for i, host in enumerate(hosts):
            if problem := check_gateway_host(host):
                raise invalid(problem, at=f"[{i}]")
        return hosts

    @model_validator(mode="after")
    def _tls(self) -> Server:
        protocol = self.port.protocol.upper()
        if protocol in TLS_PROTOCOLS and self.tls is None:
            raise invalid(f"server must have TLS settings for {protocol} ports", at="tls")
        if (
            self.tls is not None
            and protocol not in TLS_PROTOCOLS
            and not self.tls.https_redirect
            and self.tls.mode is not None
        ):
            raise invalid(f"server cannot have TLS settings for plain text {protocol} ports", at="tls")
        return self


class GatewaySpec(Model):
    servers: list[Server]
    selector: Labels | None = None

    @field_validator("servers")
    @classmethod
    def _servers(cls, servers: list[Server]) -> list[Server]:
        if not servers:
            raise invalid("gateway must have at least one server")
        names: set[str] = set()
        for i, server in enumerate(servers):
            if server.name:
                if server.name in names:
                    raise invalid(f"duplicate value: server name {server.name!r}", at=f"[{i}].name")
                names.add(server.name)
        return servers


class Gateway(Resource):
    KIND = "Gateway"

    kind: Literal["Gateway"]
    spec: GatewaySpec
