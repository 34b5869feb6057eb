"""RequestAuthentication in the data plane: JWTs found in a request, verified against the view's rules.

`JwtAuthenticator` is built once per view from its `JwtRule`s (keys parsed from the inline JWKS by
`mesh.proxy.jwks`, token locations, audiences); `authenticate` is synchronous over the request head and an
injected wall clock and says: no token (the request goes on unauthenticated), a verified token
(`Authenticated`: principal "<iss>/<sub>", audiences, presenter, claims, for `mesh.proxy.authz`), or the
reason it is refused (the 401 body, in Envoy's jwt_authn words). Issuer, times and audiences are checked
here, the signature by `mesh.proxy.jwks.verify`. `rewrite` then removes the token and adds the output
headers. `mesh.proxy.access` runs it before authorization. Semantics are Istio's as Envoy's jwt_authn runs
them (`requires_any` over the rules plus `allow_missing`): a missing token passes, a present invalid one is
refused, one verified token is enough.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from mesh.proxy import jwks
from mesh.view import model

# Envoy's jwt_authn default clock_skew_seconds, which Istio keeps: leeway on `exp` and `nbf`.
CLOCK_SKEW_S = 60
# Verified tokens kept per view (clients choose tokens: bounded); an entry lives until its token expires.
MAX_CACHED_TOKENS = 1024
# Istio's token locations when a rule names none.
DEFAULT_HEADERS = (("authorization", "Bearer "),)
DEFAULT_PARAMS = ("access_token",)

# Envoy's jwt_verify_lib status texts: the body of the 401.
BAD_FORMAT = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
BAD_HEADER = "Jwt header is an invalid JSON"
BAD_PAYLOAD = "Jwt payload is an invalid JSON"
UNSUPPORTED_ALG = "Jwt header [alg] is not supported"
UNKNOWN_ISSUER = "Jwt issuer is not configured"
NOT_YET_VALID = "Jwt not yet valid"
EXPIRED = "Jwt is expired"
AUDIENCE_NOT_ALLOWED = "Audiences in Jwt are not allowed"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
VERIFICATION_FAILS = "Jwt verification fails"

# Characters of a JWT (base64url segments and dots): what follows a header prefix, up to anything else.
_TOKEN = re.compile(r"[A-Za-z0-9_\-.=+/]+")


class Authenticated:
    """A verified JWT: what authorization and the output headers read."""

    __slots__ = ("issuer", "subject", "principal", "audiences", "presenter", "claims", "token", "rule",
                 "expires")

    def __init__(self, claims: dict, token: str, rule: CompiledJwtRule) -> None:
        self.claims = claims
        self.token = token
        self.rule = rule
        self.issuer = str(claims.get("iss", ""))
        self.subject = str(claims.get("sub", ""))
        self.principal = f"{self.issuer}/{self.subject}"
        audience = claims.get("aud")
        if isinstance(audience, list):
            self.audiences = tuple(a for a in audience if isinstance(a, str))
        else:
            self.audiences = (audience,) if isinstance(audience, str) else ()
        presenter = claims.get("azp")
        self.presenter = presenter if isinstance(presenter, str) else None
        expires = claims.get("exp")
        self.expires = float(expires) + CLOCK_SKEW_S if _is_number(expires) else None

    def __repr__(self) -> str:
        return f"<Authenticated {self.principal} aud={list(self.audiences)}>"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class CompiledJwtRule:
    __slots__ = ("spec", "algorithms", "keys", "headers", "params", "cookies", "audiences", "claim_headers", "payload_header")

    def __init__(self, spec: model.JwtRule) -> None:
        self.spec = spec
        self.algorithms = jwks.supported_algorithms()  # PyJWT: imported as a view is applied, not per request
        self.keys = jwks.parse_jwks(spec.jwks)
        configured = spec.from_headers or spec.from_params or spec.from_cookies
        self.headers = tuple((name.lower().encode("latin-1"), prefix) for name, prefix in (
            spec.from_headers if configured else DEFAULT_HEADERS))
        self.params = spec.from_params if configured else DEFAULT_PARAMS
        self.cookies = spec.from_cookies
        self.audiences = frozenset(spec.audiences)
        self.payload_header = spec.output_payload_to_header.lower().encode("latin-1")
        self.claim_headers = tuple((header.lower().encode("latin-1"), tuple(claim.split(".")))
                                   for header, claim in spec.output_claim_to_headers)

    def tokens(self, head) -> list[str]:
        """Tokens in this rule's locations, in order: headers (after the prefix), query, cookies."""
        found = []
        for name, prefix in self.headers:
            for key, raw in head.headers:
                if key != name:
                    continue
                value = raw.decode("latin-1")
                if prefix and not value.startswith(prefix):
                    continue
                token = _TOKEN.match(value, len(prefix))
                if token is not None:
                    found.append(token.group())
        if self.params and "?" in head.path:
            query = head.query()
            found.extend(query[param] for param in self.params if query.get(param))
        if self.cookies:
            cookies = _cookies(head)
            found.extend(cookies[name] for name in self.cookies if cookies.get(name))
        return found


def _cookies(head) -> dict[str, str]:
    jar = {}
    for key, raw in head.headers:
        if key == b"cookie":
            for part in raw.decode("latin-1").split(";"):
                name, sep, value = part.strip().partition("=")
                if sep:
                    jar.setdefault(name, value.strip('"'))
    return jar


def _parse(token: str) -> tuple[dict, dict] | str:
    parts = token.split(".")
    if len(parts) != 3:
        return BAD_FORMAT
    try:
        header = json.loads(jwks.base64url_decode(parts[0]))
    except ValueError:
        return BAD_HEADER
    try:
        payload = json.loads(jwks.base64url_decode(parts[1]))
    except ValueError:
        return BAD_PAYLOAD
    if not isinstance(header, dict):
        return BAD_HEADER
    if not isinstance(payload, dict):
        return BAD_PAYLOAD
    return header, payload


class JwtAuthenticator:
    """The view's RequestAuthentication rules; `clock` is wall time (JWT times are epoch seconds)."""

    __slots__ = ("rules", "clock", "cache")

    def __init__(self, rules: tuple[model.JwtRule, ...], clock: Callable[[], float] = time.time) -> None:
        self.rules = tuple(CompiledJwtRule(rule) for rule in rules)
        self.clock = clock
        self.cache: dict[tuple[int, str], Authenticated] = {}

    def authenticate(self, head) -> tuple[Authenticated | None, str | None]:
        """(verified token, None); (None, None) when no rule finds a token; or (None, reason to refuse).

        As Envoy runs Istio's `requires_any` (one provider per rule, plus `allow_missing`): a rule passes
        when it finds tokens and every one of them verifies (a good token next to a bad one is no pass);
        the first rule that passes wins; tokens present and no rule passing is a refusal."""
        failure = None
        now = None
        for index, rule in enumerate(self.rules):
            tokens = rule.tokens(head)
            if not tokens:
                continue
            if now is None:
                now = self.clock()
            verified = None
            for token in dict.fromkeys(tokens):
                result = self._check(index, rule, token, now)
                if isinstance(result, str):
                    failure = failure or result
                    verified = None
                    break
                verified = verified or result
            if verified is not None:
                return verified, None
        return None, failure

    def _check(self, index: int, rule: CompiledJwtRule, token: str, now: float) -> Authenticated | str:
        cache = self.cache
        hit = cache.get((index, token))
        if hit is not None:
            if hit.expires is None or now <= hit.expires:
                return hit
            del cache[(index, token)]
        parsed = _parse(token)
        if isinstance(parsed, str):
            return parsed
        header, payload = parsed
        issuer = rule.spec.issuer
        if issuer and payload.get("iss") != issuer:  # Envoy: a provider without issuer checks no `iss`
            return UNKNOWN_ISSUER
        result = self._verify(rule, token, header, payload, now)
        if isinstance(result, Authenticated):
            if len(cache) >= MAX_CACHED_TOKENS:
                cache.pop(next(iter(cache)))  # the oldest entry
            cache[(index, token)] = result
        return result

    def _verify(self, rule: CompiledJwtRule, token: str, header: dict, payload: dict,
                now: float) -> Authenticated | str:
        """Envoy's order: time constraints, audiences, then the signature with a key matching kid and alg."""
        not_before, expires = payload.get("nbf"), payload.get("exp")
        if (not_before is not None and not _is_number(not_before)) or (
                expires is not None and not _is_number(expires)):
            return VERIFICATION_FAILS
        if not_before is not None and now + CLOCK_SKEW_S < not_before:
            return NOT_YET_VALID
        if expires is not None and now > expires + CLOCK_SKEW_S:
            return EXPIRED
        if rule.audiences:
            audience = payload.get("aud")
            offered = {audience} if isinstance(audience, str) else set(audience) if isinstance(
                audience, list) else set()
            if not rule.audiences.intersection(a for a in offered if isinstance(a, str)):
                return AUDIENCE_NOT_ALLOWED
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in rule.algorithms:
            return UNSUPPORTED_ALG
        kid = header.get("kid")
        verified = jwks.verify(rule.keys, token, alg, kid if isinstance(kid, str) else "")
        if verified:
            return Authenticated(payload, token, rule)
        return NO_KEY if verified is None else VERIFICATION_FAILS

    def rewrite(self, head, auth: Authenticated) -> None:
        """After verification, as Envoy does before forwarding: the token's headers removed (unless
        `forward_original_token`; tokens in the query or a cookie stay, as in Envoy), the payload and the
        chosen claims written to their headers (replacing what the client sent)."""
        rule = auth.rule
        spec = rule.spec
        drop = set()
        if not spec.forward_original_token:  # every header this rule read a token from
            drop.update(name for name, prefix in rule.headers if any(
                k == name and v.startswith(prefix.encode("latin-1")) for k, v in head.headers))
        added = []
        if rule.payload_header:
            drop.add(rule.payload_header)
            added.append((rule.payload_header, auth.token.split(".")[1].encode("latin-1")))
        for name, path in rule.claim_headers:
            value = _claim_text(auth.claims, path)
            if value is not None:
                drop.add(name)
                added.append((name, value.encode("latin-1", "replace")))
        if drop:
            head.headers = [(k, v) for k, v in head.headers if k not in drop] + added

    def __repr__(self) -> str:
        return f"<JwtAuthenticator rules={len(self.rules)} cached={len(self.cache)}>"


def _claim_text(claims: dict, path: tuple[str, ...]) -> str | None:
    """A claim as a header value: strings, numbers and booleans only (Istio's outputClaimToHeaders)."""
    value = claims
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None
