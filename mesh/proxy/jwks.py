"""A JwtRule's key set in the data plane: its inline JWKS parsed into keys, JWT signatures checked with them.

`parse_jwks` turns the key set text the view carries (`mesh.control.jwks` fetched it; this module never does
I/O) into `Key`s: a `kid` and, per algorithm the key may verify, PyJWT's algorithm with the prepared key.
`verify` checks a token's signature with the keys matching its `kid` and `alg`, and tells "no key matches"
apart from "a key matched and the signature is wrong", as Envoy's jwt_verify_lib does. PyJWT, and the
cryptography backends it loads, are imported on first use. `mesh.proxy.jwt_authn` builds keys per rule as a
view is applied and calls `verify` once a token passes its other checks.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC = {"P-256": ("ES256",), "P-384": ("ES384",), "P-521": ("ES512",), "secp256k1": ("ES256K",)}
_HMAC = ("HS256", "HS384", "HS512")


@functools.cache
def supported_algorithms() -> dict[str, Any]:
    """PyJWT's verification algorithms, "none" excluded. Imported on first use: PyJWT and the cryptography
    backends it loads cost every proxy megabytes of memory, and only those with a RequestAuthentication
    need them."""
    from jwt.algorithms import get_default_algorithms

    return {name: alg for name, alg in get_default_algorithms().items() if name != "none"}


def base64url_decode(segment: str) -> bytes:
    """A JWT segment: base64url without padding (RFC 7515 section 2). Raises ValueError."""
    data = segment.encode("ascii")
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


def _key_algorithms(jwk: dict) -> tuple[str, ...]:
    """What a JWK may verify: its `alg` when set, else every algorithm of its key type (never crossing
    families, so an RSA public key is never used as an HMAC secret)."""
    kty = jwk.get("kty")
    family = {"RSA": _RSA, "EC": _EC.get(jwk.get("crv"), ()), "OKP": ("EdDSA",), "oct": _HMAC}.get(kty, ())
    alg = jwk.get("alg")
    if alg:
        return (alg,) if alg in family else ()
    return family


class Key:
    """One usable JWKS key: its `kid` and, per algorithm it may verify, the algorithm and prepared key."""

    __slots__ = ("kid", "verifiers")

    def __init__(self, kid: str, verifiers: dict[str, tuple]) -> None:
        self.kid = kid
        self.verifiers = verifiers


def parse_jwks(text: str) -> tuple[Key, ...]:
    """Usable keys of a JWKS; keys PyJWT cannot load are skipped (a set with none fails every token,
    as Istio's placeholder key does when a JWKS cannot be fetched)."""
    try:
        document = json.loads(text)
    except ValueError:
        return ()
    entries = document.get("keys", ()) if isinstance(document, dict) else ()
    from jwt import PyJWK

    algorithms = supported_algorithms()
    keys = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        verifiers = {}
        for name in _key_algorithms(entry):
            algorithm = algorithms.get(name)
            if algorithm is None:
                continue
            try:
                verifiers[name] = (algorithm, algorithm.prepare_key(PyJWK(entry, name).key))
            except Exception:  # noqa: BLE001 - any key PyJWT refuses is simply not usable
                continue
        if verifiers:
            keys.append(Key(str(entry.get("kid") or ""), verifiers))
    return tuple(keys)


def verify(keys: tuple[Key, ...], token: str, alg: str, kid: str) -> bool | None:
    """Whether one of `keys` signed `token` (three dot-separated segments) with `alg`: True when a key
    verifies it, False when keys match but none verifies (or the signature is not base64url), None when
    no key may verify `alg` under `kid` (a key without a kid, or a token without one, matches any)."""
    head_segment, payload_segment, signature_segment = token.split(".")
    try:
        signature = base64url_decode(signature_segment)
    except ValueError:
        return False
    signing_input = f"{head_segment}.{payload_segment}".encode("ascii", "replace")
    matched = False
    for key in keys:
        if kid and key.kid and key.kid != kid:
            continue
        verifier = key.verifiers.get(alg)
        if verifier is None:
            continue
        matched = True
        algorithm, prepared = verifier
        try:
            if algorithm.verify(signing_input, prepared, signature):
                return True
        except Exception:  # noqa: BLE001 - a malformed signature is a failed verification
            continue
    return False if matched else None
