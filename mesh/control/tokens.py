"""Local bootstrap tokens: the one-time credential a locally started proxy presents with its first CSR.

The local runtime's supervisor (`mesh.local.supervisor`) mints a fresh random token every time it starts a
sidecar or gateway, writes a record `<dir>/<sha256(token)>.json` (0600) naming the identity the proxy runs
as, and hands the token to the process in `TOKEN_ENV` (never on its command line). The control plane
(`mesh.control.authn.BootstrapTokens`) consumes the record on first use: the record is claimed by an atomic
rename and deleted, so a token works once, even under concurrent use. The identity signed is the record's
(a CSR asking for another is refused). Only the hash is on disk: reading the directory does not reveal a token.

Standard library only: the supervisor imports this module without the control plane's dependencies.

Example:
    token = mint(ca_dir / "tokens", "bookinfo", "books", "books-v1.bookinfo", now=time.time())
    record = consume(ca_dir / "tokens", token, now=time.time())  # TokenError the second time
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from mesh.control import private

TOKEN_ENV = "WEIR_BOOTSTRAP_TOKEN"
DEFAULT_TTL_S = 600.0  # a proxy asks for its certificate within seconds of its start; 10 min is ample
TOKEN_BYTES = 32
# Tokens are URL-safe base64; anything else (or longer) is refused before touching the file system.
_TOKEN_FORMAT = re.compile(r"[A-Za-z0-9_-]{16,256}")
_SUFFIX = ".json"


class TokenError(Exception):
    """An unknown, used, expired or malformed token (answered with 401)."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    namespace: str
    service_account: str
    proxy_id: str
    issued_at: float
    expires_at: float

    def to_dict(self) -> dict[str, object]:
        return {"namespace": self.namespace, "serviceAccount": self.service_account, "proxyId": self.proxy_id,
                "issuedAt": self.issued_at, "expiresAt": self.expires_at}


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_dir(directory: Path) -> None:
    """The directory and its parent (the CA directory), owner-only."""
    for path in (directory.parent, directory):
        private.ensure_private_dir(path)


def mint(directory: Path, namespace: str, service_account: str, proxy_id: str, *, now: float,
         ttl_s: float = DEFAULT_TTL_S) -> str:
    """A new token for this identity; its record is on disk (0600) when this returns."""
    ensure_dir(directory)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    record = TokenRecord(namespace, service_account, proxy_id, now, now + ttl_s)
    private.write_file(directory / f"{digest(token)}{_SUFFIX}", json.dumps(record.to_dict()).encode())  # 0600
    return token


def revoke(directory: Path, token: str) -> bool:
    """Remove a token's record if it was not used yet; True when it was there."""
    return _unlink(directory / f"{digest(token)}{_SUFFIX}")


def consume(directory: Path, token: str, *, now: float) -> TokenRecord:
    """The record of `token`, which is used up by this call; TokenError when it cannot be used."""
    if not isinstance(token, str) or not _TOKEN_FORMAT.fullmatch(token):
        raise TokenError("malformed bootstrap token")
    path = directory / f"{digest(token)}{_SUFFIX}"
    claimed = directory / f".{path.name}.{secrets.token_hex(8)}.claimed"
    try:
        os.rename(path, claimed)  # atomic: of two concurrent uses, one wins the rename
    except FileNotFoundError:
        raise TokenError("unknown or already used bootstrap token") from None
    try:
        record = _read(claimed)
    finally:
        _unlink(claimed)
    if now >= record.expires_at:
        raise TokenError(f"bootstrap token for {record.proxy_id} expired {now - record.expires_at:.0f} s ago")
    return record


def sweep(directory: Path, *, now: float) -> int:
    """Delete expired and unreadable records; how many went."""
    removed = 0
    for path in directory.glob(f"*{_SUFFIX}") if directory.is_dir() else ():
        try:
            expired = now >= _read(path).expires_at
        except (OSError, ValueError, KeyError, TypeError):
            expired = True
        if expired and _unlink(path):
            removed += 1
    return removed


def _read(path: Path) -> TokenRecord:
    doc = json.loads(path.read_text())
    return TokenRecord(str(doc["namespace"]), str(doc["serviceAccount"]), str(doc["proxyId"]),
                       float(doc["issuedAt"]), float(doc["expiresAt"]))


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
