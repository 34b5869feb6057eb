"""TLS settings → view: DestinationRule `tls` (ClientTLSSettings) → `model.UpstreamTls`, Gateway server
`tls` (ServerTLSSettings) → `model.ServerTls`.

Which `tls` applies to a cluster (top level, port level, subset) is decided by
`mesh.control.clusters.effective_setting`; which servers share a gateway listener by
`mesh.control.gateways`. Here only one settings object is converted. File paths are passed as written:
the proxy reads them (a missing file makes it NACK the view). A Gateway `credentialName` names a
directory under the control plane's credentials dir (`MeshSettings.credentials_dir`): `tls.crt`,
`tls.key` and, for (OPTIONAL_)MUTUAL, `ca.crt` — Kubernetes' TLS Secret keys, as the Pulumi program
mounts them.
"""

from __future__ import annotations

import base64
import logging
import posixpath
from typing import Any

from mesh.view import model
from mesh.view import security as view_security

log = logging.getLogger(__name__)

CLIENT_CA_MODES = frozenset({view_security.TLS_MUTUAL, view_security.TLS_OPTIONAL_MUTUAL})

CERT_FILE = "tls.crt"  # Kubernetes TLS Secret keys; also the local files of a credentialName
KEY_FILE = "tls.key"
CA_FILE = "ca.crt"


def upstream_tls(settings: Any) -> model.UpstreamTls | None:
    """A DestinationRule `tls`; None (no `tls`, or one without a mode) leaves the cluster on auto mTLS.
    `credentialName` (a Kubernetes Secret) is not resolved for clients: its files stay empty."""
    if settings is None or settings.mode is None:
        return None
    return model.UpstreamTls(
        mode=settings.mode,
        sni=settings.sni or "",
        subject_alt_names=tuple(settings.subject_alt_names or ()),
        ca_file=settings.ca_certificates or "",
        cert_file=settings.client_certificate or "",
        key_file=settings.private_key or "",
        insecure_skip_verify=bool(settings.insecure_skip_verify),
    )


def server_tls_mode(server: Any) -> str | None:
    """The TLS mode a Gateway server terminates with; None for plaintext. HTTPS without a mode is
    PASSTHROUGH (the proto's zero value)."""
    protocol = server.port.protocol.upper()
    if protocol not in ("HTTPS", "TLS"):
        return None
    return (server.tls.mode if server.tls is not None else None) or "PASSTHROUGH"


def server_tls(gateway_key: str, server: Any, credentials_dir: str) -> model.ServerTls:
    """A terminating server (one `mesh.api.dropped_server` keeps) → its certificate entry."""
    tls = server.tls
    mode = server_tls_mode(server)
    cert, key, ca = tls.server_certificate or "", tls.private_key or "", tls.ca_certificates or ""
    credential = tls.credential_name or next(iter(tls.credential_names or ()), None)
    if len(tls.credential_names or ()) > 1 or len(tls.tls_certificates or ()) > 1:
        log.warning("%s: only one certificate per server is served (the first)", gateway_key)
    if credential:
        directory = posixpath.join(credentials_dir, credential)
        cert, key = posixpath.join(directory, CERT_FILE), posixpath.join(directory, KEY_FILE)
        ca = ca or posixpath.join(directory, CA_FILE)
    elif tls.tls_certificates and not cert:
        first = tls.tls_certificates[0]
        cert, key, ca = first.server_certificate or "", first.private_key or "", ca or first.ca_certificates or ""
    if mode == view_security.TLS_OPTIONAL_MUTUAL and not ca:
        # Envoy asks for no client certificate it has no roots to verify against: SIMPLE, as in Istio.
        log.warning("%s: server %s: OPTIONAL_MUTUAL without caCertificates asks for no client certificate",
                    gateway_key, server.name or server.port.number)
        mode = view_security.TLS_SIMPLE
    mutual = mode in CLIENT_CA_MODES
    return model.ServerTls(
        mode=mode,
        hosts=server_hosts(server),
        cert_file=cert if mode != view_security.TLS_ISTIO_MUTUAL else "",
        key_file=key if mode != view_security.TLS_ISTIO_MUTUAL else "",
        ca_file=ca if mutual else "",
        subject_alt_names=tuple(tls.subject_alt_names or ()) if mutual else (),
        min_protocol=_protocol(gateway_key, "min", tls.min_protocol_version),
        max_protocol=_protocol(gateway_key, "max", tls.max_protocol_version),
        # ISTIO_MUTUAL handshakes on the workload context, which no server's suites change (analyze warns).
        cipher_suites=tls.cipher_suites_in_effect if mode != view_security.TLS_ISTIO_MUTUAL else (),
        # Pins check client certificates, so only where one is verified (Envoy's validation context).
        spki_sha256=tuple(base64.b64decode(v).hex() for v in tls.verify_certificate_spki or ()) if mutual
        else (),
        cert_sha256=tuple(v.replace(":", "").lower() for v in tls.verify_certificate_hash or ()) if mutual
        else (),
    )


def server_hosts(server: Any) -> tuple[str, ...]:
    """The SNI names of a server: its hosts without the `namespace/` part."""
    hosts = (entry.rpartition("/")[2] for entry in server.hosts)
    return tuple(dict.fromkeys(hosts)) or ("*",)


def _protocol(gateway_key: str, bound: str, version: str | None) -> str:
    """A min/maxProtocolVersion for the proxy: "" (unset, TLS_AUTO: the default bound) or TLSV1_2/TLSV1_3.
    Weir's gateway serves TLS 1.2 and 1.3 only: an older version reads as TLSV1_2 (analyze warns)."""
    if version is None or version == "TLS_AUTO":
        return ""
    if version not in ("TLSV1_2", "TLSV1_3"):
        log.warning("%s: %sProtocolVersion %s is below what Weir's gateway serves (TLS 1.2)", gateway_key,
                    bound, version)
        return "TLSV1_2" if bound == "max" else ""
    return version
