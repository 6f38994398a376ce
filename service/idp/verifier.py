"""Verifying an identity provider's JWT and mapping its claims to a user, tier and role.

PyJWT checks the signature and the registered claims (``iss``, ``aud``,
``exp``, ``nbf``, ``iat``, within the leeway); this module picks the key,
refuses what must never be tried, and turns every failure into an
Unauthenticated error whose message names the check that failed. The token
itself never appears in a message or a log line.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from service.errors import InvalidRequest, Reason, ServiceUnavailable, Unauthenticated
from service.idp.cache import VerifiedTokens
from service.idp.config import JwtSection
from service.idp.keys import KeySet
from service.profiles import validate_user_id

log = logging.getLogger(__name__)

# A compact JWS: header.payload.signature, base64url without padding. Checked with one
# C-level match; PyJWT's own per-character check runs only in the one strict parse.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    """Who a verified token says the caller is."""

    user_id: str
    tier: str  # "" when the token names none: the default limits
    admin: bool


def looks_like_jwt(token: str) -> bool:
    """A compact JWS: three dot-separated parts, the first a base64url JSON object."""
    return token.startswith("eyJ") and token.count(".") == 2


def invalid(why: str) -> Unauthenticated:
    """A 401 for a presented token that failed a check."""
    return Unauthenticated(f"invalid token: {why}", reason=Reason.INVALID_TOKEN)


class JwtVerifier:
    """Verifies bearer JWTs of the issuer configured in ``auth.jwt``."""

    def __init__(
        self,
        section: JwtSection,
        keys: KeySet,
        *,
        known_tiers: Collection[str] | None = None,
        cache_size: int = 10_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._verified: VerifiedTokens[JwtIdentity] = VerifiedTokens(
            size=cache_size, ttl_s=section.cache_ttl_s, wall_clock=wall_clock
        )
        self.full_verifications = 0  # tokens verified in full (not from the cache)
        self._section = section
        self._keys = keys
        self._allowed = tuple(section.algorithms)
        self._audience = list(section.audience)
        self._known_tiers = known_tiers
        self._options: Any = {"require": ["exp", "iss", "aud"]}

    @classmethod
    def from_section(
        cls, section: JwtSection, *, known_tiers: Collection[str] | None = None
    ) -> JwtVerifier:
        keys = KeySet(
            url=section.jwks_url,
            file=section.jwks_file,
            min_refresh_interval_s=section.min_refresh_interval_s,
            max_age_s=section.max_age_s,
            fetch_timeout_s=section.fetch_timeout_s,
        )
        return cls(section, keys, known_tiers=known_tiers)

    @property
    def keys(self) -> KeySet:
        return self._keys

    def oversize(self, token: str) -> bool:
        """Whether ``token`` is longer than ``max_token_bytes`` (``verify`` refuses it first)."""
        return len(token) > self._section.max_token_bytes

    async def start(self) -> None:
        """Fetch the key set once; an unreachable issuer is a warning, not a failure."""
        await self._keys.refresh()
        if not self._keys.loaded:
            log.warning(
                "JWT key set of issuer %s could not be loaded from %s (%s): tokens are "
                "answered 503 until it is; the service starts anyway",
                self._section.issuer,
                self._keys.source,
                self._keys.last_error,
            )

    async def aclose(self) -> None:
        await self._keys.aclose()

    async def verify(self, token: str) -> JwtIdentity:
        """The identity of a valid token; Unauthenticated naming the failed check otherwise.

        Waits on the network only for a key-set refresh that an unknown kid
        needs; ServiceUnavailable when no key set was ever loaded.
        """
        if self.oversize(token):
            limit = self._section.max_token_bytes
            raise invalid(f"the token is {len(token)} bytes long, more than the {limit} allowed")
        digest = self._verified.digest(token)
        known = self._verified.get(digest)
        if known is not None:
            return known
        header = _header(token)
        algorithm = header.get("alg")
        if algorithm not in self._allowed:
            shown = repr(algorithm)[:24]
            raise invalid(f"algorithm {shown} is not allowed (allowed: {', '.join(self._allowed)})")
        kid = header.get("kid", "")
        if not isinstance(kid, str):
            raise invalid("the kid header is not a string")
        if self._keys.stale:
            self._keys.refresh_soon()  # the held keys serve meanwhile
        key = await self._key(kid, algorithm)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._section.issuer,
                leeway=self._section.leeway_s,
                options=self._options,
            )
        except jwt_errors.PyJWTError as exc:
            raise invalid(_reason(exc, self._section.leeway_s)) from None
        identity = self._identity(claims)
        self.full_verifications += 1
        # exp is present and numeric: PyJWT required and checked it.
        self._verified.put(digest, identity, float(claims["exp"]) + self._section.leeway_s)
        return identity

    async def _key(self, kid: str, algorithm: str) -> jwt.PyJWK:
        for attempt in (1, 2):
            chosen = kid or self._keys.only_kid()
            if chosen is None and self._keys.loaded:
                raise invalid("the token has no kid and the issuer has several keys")
            try:
                key = self._keys.key(chosen or "", algorithm)
            except jwt_errors.PyJWTError as exc:
                raise invalid(f"its signing key does not fit its algorithm: {exc}") from None
            if key is not None:
                return key
            if attempt == 1:
                await self._keys.refresh()  # a rotation at the issuer shows as a new kid
        if not self._keys.loaded:
            raise ServiceUnavailable(
                f"cannot verify tokens yet: the identity provider's key set was never loaded "
                f"({self._keys.last_error or 'no answer yet'})",
                retry_after_s=self._section.min_refresh_interval_s,
            )
        every = self._section.min_refresh_interval_s
        raise invalid(
            "unknown signing key (kid): the issuer's key set has no such key "
            f"(it is re-fetched for an unknown kid at most every {every:g} s)"
        )

    def _identity(self, claims: Mapping[str, Any]) -> JwtIdentity:
        name = self._section.user_claim
        user = claim(claims, name)
        if user is None:
            raise invalid(f"the claim {name!r} (the user id) is missing")
        try:
            user_id = validate_user_id(user)
        except InvalidRequest:
            raise invalid(
                f"the claim {name!r} is not a valid user id "
                "(1-128 characters from A-Z a-z 0-9 . _ @ -, not starting with '.')"
            ) from None
        return JwtIdentity(user_id, self._tier(claims), self._admin(claims))

    def _tier(self, claims: Mapping[str, Any]) -> str:
        if not self._section.tier_claim:
            return ""
        value = claim(claims, self._section.tier_claim)
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        for name in names:
            if isinstance(name, str) and (self._known_tiers is None or name in self._known_tiers):
                return name
        return ""

    def _admin(self, claims: Mapping[str, Any]) -> bool:
        if not self._section.admin_claim:
            return False
        value = claim(claims, self._section.admin_claim)
        wanted = self._section.admin_values
        if not wanted:
            return value is True  # a boolean claim such as "is_admin": true
        values = value if isinstance(value, list) else [value]
        return any(isinstance(v, str) and v in wanted for v in values)


def _header(token: str) -> dict[str, Any]:
    """The JOSE header, read to pick the key; PyJWT parses the whole token again strictly."""
    if not _COMPACT.fullmatch(token):
        raise invalid("malformed token (not three base64url parts)")
    head = token[: token.index(".")]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        raise invalid("malformed token (its header is not base64url JSON)") from None
    if not isinstance(header, dict):
        raise invalid("malformed token (its header is not a JSON object)")
    return header


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by its name, else by a dotted path into nested objects; None when absent."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _reason(exc: jwt_errors.PyJWTError, leeway_s: float) -> str:
    """Which check a PyJWT error stands for, in words (ordered: subclasses first)."""
    if isinstance(exc, jwt_errors.ExpiredSignatureError):
        return f"expired (exp is in the past, beyond the {leeway_s:g} s leeway)"
    if isinstance(exc, jwt_errors.ImmatureSignatureError):
        which = "iat" if "iat" in str(exc) else "nbf"
        return f"not yet valid ({which} is in the future, beyond the {leeway_s:g} s leeway)"
    if isinstance(exc, jwt_errors.InvalidIssuerError):
        return "wrong issuer (iss is not the configured issuer)"
    if isinstance(exc, jwt_errors.InvalidAudienceError):
        return "wrong audience (aud names none of this service's audiences)"
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        return f"the required claim {exc.claim!r} is missing"
    if isinstance(exc, jwt_errors.InvalidSignatureError):
        return "bad signature (not signed by the issuer's key)"
    if isinstance(exc, jwt_errors.InvalidIssuedAtError):
        return "iat is not a number"
    if isinstance(exc, jwt_errors.InvalidSubjectError):
        return "the claim 'sub' is not a string"
    if isinstance(exc, jwt_errors.InvalidKeyError | jwt_errors.InvalidAlgorithmError):
        return "its signing key does not fit its algorithm"
    if isinstance(exc, jwt_errors.DecodeError):
        return "malformed token"
    return f"rejected ({type(exc).__name__})"
