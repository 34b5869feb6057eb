"""RequestAuthentication: the JWTs a workload accepts (issuer, audiences, keys, where the token is
found, what is forwarded), selected by labels or a targetRef.

Validation follows Istio's ValidateRequestAuthentication/validateJwtRule and the CRD's rules. A
request without a token passes RequestAuthentication; requiring one is AuthorizationPolicy's job.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from mesh.api.errors import invalid
from mesh.api.resource import SECURITY_GROUP, SECURITY_VERSIONS, Resource
from mesh.api.selection import PolicyTargetReference, TargetRefs, check_one_selection
from mesh.api.types import Duration, Model, WorkloadSelector

MAX_JWT_RULES = 4096
MAX_SPACE_DELIMITED_CLAIMS = 64
_MAX_URI_LEN = 2048
# Istio's ValidateStrictHTTPHeaderName (the CRD pattern also allows '_'; the webhook does not).
_HEADER_NAME = re.compile(r"^[-A-Za-z0-9]+$")
# Members each JSON Web Key type must carry (RFC 7518 section 6), all base64url.
_JWK_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "oct": ("k",), "OKP": ("crv", "x")}
_JWK_TEXT_MEMBERS = frozenset({"crv"})
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")

NonEmpty = Annotated[str, Field(min_length=1)]


class JWTHeader(Model):
    """A header carrying the token; `prefix` (e.g. "Bearer ") is stripped before decoding."""

    name: NonEmpty
    prefix: str | None = None


class ClaimToHeader(Model):
    """Copy a verified claim into a request header."""

    header: str
    claim: NonEmpty

    @field_validator("header")
    @classmethod
    def _header(cls, header: str) -> str:
        if not header:
            raise invalid("header name must not be empty")
        if not _HEADER_NAME.match(header):
            raise invalid(f"invalid header name {header!r}: only letters, digits and '-' are allowed")
        return header


def _b64url(text: Any) -> bool:
    if not isinstance(text, str) or not _BASE64URL.match(text):
        return False
    body = text.rstrip("=")
    try:
        base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return False
    return True


def _check_jwk(key: Any) -> str:
    if not isinstance(key, dict):
        return "a key must be a JSON object"
    kty = key.get("kty")
    if kty not in _JWK_MEMBERS:
        return f"unsupported key type (kty) {kty!r}: expected one of {', '.join(_JWK_MEMBERS)}"
    for member in _JWK_MEMBERS[kty]:
        value = key.get(member)
        ok = isinstance(value, str) and bool(value) if member in _JWK_TEXT_MEMBERS else _b64url(value)
        if not ok:
            return f"{kty} key needs member {member!r} (base64url)"
    return ""


def check_jwks(text: str) -> str:
    """'' when `text` is a JSON Web Key Set (or a single JWK, as Istio's parser accepts), else why not."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return f"jwks parse error: not JSON: {exc}"
    keys = doc.get("keys") if isinstance(doc, dict) and "keys" in doc else [doc]
    if not isinstance(keys, list) or not keys:
        return "jwks parse error: 'keys' must be a non-empty list"
    for i, key in enumerate(keys):
        if problem := _check_jwk(key):
            return f"jwks parse error: key {i}: {problem}"
    return ""


def check_jwks_uri(uri: str) -> str:
    if not uri:
        return "jwksUri must not be empty"
    if len(uri) > _MAX_URI_LEN:
        return f"jwksUri must be at most {_MAX_URI_LEN} characters"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        return f"invalid url {uri!r}: {exc}"
    if parts.scheme.lower() == "file":  # Weir's extension: the control plane reads and inlines the file
        ok = not parts.netloc and parts.path.startswith("/")
        return "" if ok else f"invalid url {uri!r}: a file url is file:///absolute/path"
    if parts.scheme.lower() not in ("http", "https"):
        return f"invalid url {uri!r}: url must have scheme http://, https:// or file://"
    if not parts.hostname:
        return f"invalid url {uri!r}: no host"
    return ""


class JWTRule(Model):
    """One accepted JWT: who issues it, for whom, with which keys, and where it is found."""

    issuer: str | None = None
    audiences: list[NonEmpty] | None = None
    jwks_uri: str | None = None
    jwks: str | None = None
    from_headers: list[JWTHeader] | None = None
    from_params: list[NonEmpty] | None = None
    from_cookies: list[NonEmpty] | None = None
    output_payload_to_header: str | None = None
    forward_original_token: bool | None = None
    output_claim_to_headers: list[ClaimToHeader] | None = None
    timeout: Duration | None = None
    space_delimited_claims: Annotated[list[NonEmpty], Field(max_length=MAX_SPACE_DELIMITED_CLAIMS)] | None = (
        None
    )

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, issuer: str | None) -> str | None:
        if issuer == "":
            raise invalid("issuer must not be empty")
        return issuer

    @field_validator("jwks_uri")
    @classmethod
    def _jwks_uri(cls, uri: str | None) -> str | None:
        if uri is not None and (problem := check_jwks_uri(uri)):
            raise invalid(problem)
        return uri

    @field_validator("jwks")
    @classmethod
    def _jwks(cls, jwks: str | None) -> str | None:
        if jwks and (problem := check_jwks(jwks)):
            raise invalid(problem)
        return jwks

    @field_validator("timeout", mode="wrap")
    @classmethod
    def _timeout(cls, value: Any, handler: Any) -> Duration | None:
        # Istio's ValidateDuration, worded as the CRD words it.
        try:
            timeout = handler(value)
        except ValidationError:
            raise invalid(f"invalid timeout {value!r}: must be a valid duration greater than 1ms") from None
        if timeout is not None:
            nanos = round(timeout.seconds * 1e9)
            if nanos < 1_000_000:
                raise invalid(f"invalid timeout {value!r}: must be a valid duration greater than 1ms")
            if nanos % 1_000_000:
                raise invalid(f"invalid timeout {value!r}: only durations to ms precision are supported")
        return timeout

    @model_validator(mode="after")
    def _keys(self) -> JWTRule:
        if self.jwks_uri is not None and self.jwks is not None:
            raise invalid("only one of jwks or jwksUri can be set")
        if not self.issuer and not self.jwks_uri:
            raise invalid("issuer or jwksUri must be set", at="issuer")
        return self


class RequestAuthenticationSpec(Model):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: TargetRefs | None = None
    jwt_rules: Annotated[list[JWTRule], Field(max_length=MAX_JWT_RULES)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_selection(cls, data: Any) -> Any:
        return check_one_selection(data)


class RequestAuthentication(Resource):
    KIND = "RequestAuthentication"
    GROUP = SECURITY_GROUP
    VERSIONS = SECURITY_VERSIONS

    kind: Literal["RequestAuthentication"]
    spec: RequestAuthenticationSpec = Field(default_factory=RequestAuthenticationSpec)
