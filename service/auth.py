"""Who is calling: bearer tokens to user identities.

Three modes, chosen by configuration:

- per-user tokens (``auth.tokens_file``): each token names one user; a request
  that names another user is refused;
- a shared token (``IOS_APITOKEN``): a trusted app names the user itself;
- open mode (no token configured): anyone names any user; logged loudly.

Both kinds of token may be configured at once. Tokens are kept and compared
only as SHA-256 digests, in constant time, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from service.errors import PermissionDenied, Unauthenticated
from service.profiles import validate_user_id as check_user_id

log = logging.getLogger(__name__)

_SHA256_PREFIX = "sha256:"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: a fixed user, or a trusted app that names users."""

    mode: Literal["user_token", "shared_token", "open"]
    user_id: str = ""  # set for user_token


def load_tokens_file(path: Path) -> dict[str, str]:
    """Read ``{user_id: token}`` (YAML or JSON); a token may be given as ``sha256:<hex>``."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if isinstance(data, dict) and isinstance(data.get("tokens"), dict):
        data = data["tokens"]
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path}: expected a mapping of user_id to token")
    for user_id in data:
        check_user_id(user_id)
    return dict(data)


class Authenticator:
    """Turns the ``authorization`` metadata and the requested user_id into a user id."""

    def __init__(
        self,
        *,
        shared_token: str = "",
        user_tokens: Mapping[str, str] | None = None,
        default_user: str = "default",
    ) -> None:
        self._shared = _digest(shared_token) if shared_token else None
        self._by_digest: dict[bytes, str] = {}
        for user_id, token in (user_tokens or {}).items():
            if token.startswith(_SHA256_PREFIX):
                digest = bytes.fromhex(token[len(_SHA256_PREFIX) :])
            else:
                digest = _digest(token)
            self._by_digest[digest] = user_id
        self._default_user = check_user_id(default_user)
        self.open = self._shared is None and not self._by_digest
        if self.open:
            log.warning(
                "NO AUTH TOKEN CONFIGURED: the service is OPEN, any caller may act as any user. "
                "Set IOS_APITOKEN or auth.tokens_file before exposing it."
            )

    def authenticate(self, authorization: str | None) -> Principal:
        """Check the bearer token; raise Unauthenticated when it is missing or unknown."""
        if self.open:
            return Principal("open")
        token = _bearer(authorization)
        if token is None:
            raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = _digest(token)
        user_id = self._by_digest.get(digest)
        if user_id is not None:
            return Principal("user_token", user_id)
        if self._shared is not None and hmac.compare_digest(digest, self._shared):
            return Principal("shared_token")
        raise Unauthenticated("invalid API token")

    def user_for(self, principal: Principal, requested: str) -> str:
        """The user a request acts as; PermissionDenied when a user token names another."""
        if principal.mode == "user_token":
            if requested and requested != principal.user_id:
                raise PermissionDenied("this token may not act as another user")
            return principal.user_id
        return check_user_id(requested) if requested else self._default_user


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
