"""The ``auth.jwt`` section: which identity provider's tokens the service accepts.

Only asymmetric algorithms can be configured. ``none`` would accept unsigned
tokens, and an HMAC algorithm would make the issuer's *public* key a shared
secret (the classic key-confusion attack), so both are refused at load time,
whatever the file or environment says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

# Every JWS algorithm whose verification key is public (RFC 7518, RFC 8037).
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class JwtSection(BaseModel):
    """Bearer JWTs signed by an identity provider (OIDC ID or access tokens).

    Off unless ``issuer`` is set. ``audience`` may be one value or a list;
    a token must name at least one of them. ``user_claim`` names the user,
    ``tier_claim`` a tier of ``limits.tiers`` (absent: the default tier), and
    ``admin_claim`` a claim whose value (or one of whose values) in
    ``admin_values`` grants the admin role. A claim name is first looked up
    as written (Auth0's namespaced claims contain dots), then as a dotted path
    into nested objects (Keycloak's ``realm_access.roles``).
    """

    # A misspelt key in a security section must not pass silently.
    model_config = ConfigDict(extra="forbid")

    issuer: str = ""
    # NoDecode: the environment may give one plain value (AGENT_AUTH__JWT__AUDIENCE=my-app),
    # which is not JSON; the validators below accept that, a JSON list, or a comma list.
    audience: Annotated[list[str], NoDecode] = Field(default_factory=list)
    jwks_url: str = ""
    jwks_file: Path | None = None
    algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ALGORITHMS)
    )
    leeway_s: float = Field(30.0, ge=0, le=600)
    user_claim: str = Field("sub", min_length=1)
    tier_claim: str = ""
    admin_claim: str = ""
    admin_values: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # An unknown kid re-fetches the key set at most this often (a flood of made-up kids
    # must not become a flood of fetches); the set is also re-fetched when older than max_age_s.
    min_refresh_interval_s: float = Field(30.0, gt=0)
    max_age_s: float = Field(3600.0, gt=0)
    fetch_timeout_s: float = Field(5.0, gt=0, le=60)
    # A verified token is remembered this long (never past its exp): an app's next
    # requests with the same token skip the signature check. 0 turns this off.
    cache_ttl_s: float = Field(60.0, ge=0, le=600)
    # Larger bearer tokens are refused before any parsing (a JWT with many groups is ~4 KB).
    # The gateway refuses a larger Authorization header itself, so a higher limit would
    # hold for gRPC clients only; gRPC metadata may be up to 256 KiB (service/server.py).
    max_token_bytes: int = Field(8192, ge=1024, le=8192)

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)

    @field_validator("audience", "admin_values", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, str):
            # One value; a JSON list from the environment. No comma splitting: an
            # audience is often a URL, and a group name may hold a comma.
            return json.loads(value) if value.lstrip().startswith("[") else [value]
        return value

    @field_validator("algorithms", mode="before")
    @classmethod
    def _algorithm_list(cls, value: object) -> object:
        if isinstance(value, str):  # RS256,ES256 or ["RS256", "ES256"]
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("algorithms")
    @classmethod
    def _only_asymmetric(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm is needed")
        for name in value:
            if name not in ASYMMETRIC_ALGORITHMS:
                why = (
                    "unsigned tokens are never accepted"
                    if name.lower() == "none"
                    else "only asymmetric algorithms may be used (an HMAC algorithm would turn "
                    "the issuer's public key into a shared secret)"
                    if name.upper().startswith("HS")
                    else "unknown algorithm"
                )
                raise ValueError(
                    f"algorithm {name!r} is not allowed: {why}; "
                    f"choose from {', '.join(ASYMMETRIC_ALGORITHMS)}"
                )
        return value

    @model_validator(mode="after")
    def _complete(self) -> JwtSection:
        configured = self.audience or self.jwks_url or self.jwks_file
        if not self.enabled:
            if configured:
                raise ValueError("issuer is required when any other auth.jwt key is set")
            return self
        if not self.audience:
            raise ValueError("audience is required (the token's aud must name this service)")
        if bool(self.jwks_url) == (self.jwks_file is not None):
            raise ValueError("set exactly one of jwks_url and jwks_file")
        if self.jwks_url:
            url = urlsplit(self.jwks_url)
            if url.scheme not in ("https", "http") or not url.hostname:
                raise ValueError(f"jwks_url must be an http(s) URL, got {self.jwks_url!r}")
            if url.scheme == "http" and url.hostname not in _LOOPBACK:
                # Keys fetched in clear text could be swapped by anyone on the path.
                raise ValueError("jwks_url must use https (plain http only on loopback)")
        if self.admin_values and not self.admin_claim:
            raise ValueError("admin_values needs admin_claim")
        return self
