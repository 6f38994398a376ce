"""Who is calling: bearer tokens to user identities.

Four kinds of caller, chosen by configuration:

- JWTs of an identity provider (``auth.jwt``, see ``service.idp``): the token
  names one user (a claim), maybe a tier and the admin role; verified against
  the issuer's published keys, so no shared secret ships inside the app;
- per-user tokens (``auth.tokens_file``, see ``service.userfile``): each token
  names one user, with a tier and maybe the admin role; a request that names
  another user is refused;
- a shared token (``IOS_APITOKEN``): a trusted app names the user itself;
- open mode (no token configured): anyone names any user; logged loudly.

Any of the kinds of token may be configured together: a bearer token that is
a known opaque token is that; otherwise one shaped like a JWT is verified as
one. Opaque tokens are kept and compared only as SHA-256 digests, in
constant time, and never logged. The users file is re-read when it changes
(checked at most once per ``reload_interval_s``, on the next call), so a
revoked token stops working without a restart.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from service.errors import AgentError, PermissionDenied, Reason, Unauthenticated
from service.idp import JwtVerifier, looks_like_jwt
from service.profiles import validate_user_id as check_user_id
from service.userfile import UserEntry, load_users, parse_users, token_digest

log = logging.getLogger(__name__)

# JWT users whose tier is remembered; past this the oldest is forgotten (its next token
# restores it), so the map stays bounded however many users sign in.
_MAX_JWT_TIERS = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: a fixed user, or a trusted app that names users.

    Only a user's own token (or JWT) carries the admin role: the shared token
    and open mode can name any user, so they never act as an admin. ``mode``
    is also the identity source GetStatus reports.
    """

    mode: Literal["jwt", "user_token", "shared_token", "open"]
    user_id: str = ""  # set for jwt and user_token
    admin: bool = False
    tier: str = ""  # from a JWT's tier claim
    # user_token: the digest of the token it signed in with, so work that waited can
    # ask whether that token still holds (``Authenticator.still_valid``).
    credential: bytes = field(default=b"", repr=False, compare=False)


def load_tokens_file(path: Path) -> dict[str, str]:
    """``{user_id: token as written}`` of a users file (see ``service.userfile``)."""
    return {user_id: e.token for user_id, e in load_users(path).items()}


class Authenticator:
    """Turns the ``authorization`` metadata and the requested user_id into a user id."""

    def __init__(
        self,
        *,
        shared_token: str = "",
        user_tokens: Mapping[str, str] | None = None,
        users_file: Path | None = None,
        default_user: str = "default",
        known_tiers: Collection[str] | None = None,
        reload_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        jwt: JwtVerifier | None = None,
    ) -> None:
        self._jwt = jwt
        # The tier of each JWT user's latest verified token, for tier_of (bounded).
        self._jwt_tiers: dict[str, str] = {}
        self._shared = token_digest(shared_token) if shared_token else None
        self._default_user = check_user_id(default_user)
        self._known_tiers = known_tiers
        self._file = users_file
        self._reload_interval_s = reload_interval_s
        self._clock = clock
        self._checked_at = clock()
        self._signature: tuple[int, ...] | None = None
        self._users: dict[str, UserEntry] = {}
        self._by_digest: dict[bytes, UserEntry] = {}
        self._revoked: list[Callable[[frozenset[str]], None]] = []
        if users_file is not None:
            self._signature = _signature(users_file)
            self._install(load_users(users_file))
            self._warn_if_empty()
        else:
            self._install(parse_users(dict(user_tokens or {}), "user_tokens"))
        self.open = self._shared is None and not self._users and users_file is None and jwt is None
        if self.open:
            log.warning(
                "NO AUTH TOKEN CONFIGURED: the service is OPEN, any caller may act as any user. "
                "Set IOS_APITOKEN, auth.tokens_file or auth.jwt before exposing it."
            )

    async def start(self) -> None:
        """Load what needs the network (the JWT key set); never fails on an unreachable issuer."""
        if self._jwt is not None:
            await self._jwt.start()

    async def aclose(self) -> None:
        if self._jwt is not None:
            await self._jwt.aclose()

    async def identify(self, authorization: str | None) -> Principal:
        """The caller of an RPC: ``authenticate``, plus JWT verification when configured.

        Opaque tokens are checked first (a dictionary look-up); a JWT is
        verified on cached keys, awaiting only a key-set refresh.
        """
        if self._jwt is None or self.open:
            return self.authenticate(authorization)
        token = _bearer(authorization)
        if token is None or not looks_like_jwt(token):
            return self.authenticate(authorization)
        # An oversize token is refused by its length alone, before it is even hashed: gRPC
        # metadata may be up to 256 KiB, and no opaque token of ours is that long.
        if not self._jwt.oversize(token) and self._known(token):
            return self.authenticate(authorization)
        identity = await self._jwt.verify(token)
        self._remember_tier(identity.user_id, identity.tier)
        return Principal("jwt", identity.user_id, identity.admin, identity.tier)

    def authenticate(self, authorization: str | None) -> Principal:
        """Check the bearer token; raise Unauthenticated when it is missing or unknown."""
        if self.open:
            return Principal("open")
        self._reload_if_changed()
        token = _bearer(authorization)
        if token is None:
            raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = token_digest(token)
        entry = self._by_digest.get(digest)
        if entry is not None:
            return Principal("user_token", entry.user_id, entry.admin, credential=digest)
        if self._shared is not None and hmac.compare_digest(digest, self._shared):
            return Principal("shared_token")
        raise Unauthenticated("invalid API token", reason=Reason.INVALID_TOKEN)

    def still_valid(self, principal: Principal) -> bool:
        """Whether the token ``principal`` signed in with still holds.

        False once a reload of the users file revoked, replaced or removed it. The
        shared token, JWTs and open mode are not revoked by the users file.
        """
        if principal.mode != "user_token":
            return True
        self._reload_if_changed()
        entry = self._users.get(principal.user_id)
        return entry is not None and hmac.compare_digest(entry.digest, principal.credential)

    def _known(self, token: str) -> bool:
        """Whether ``token`` is one of the opaque tokens (per-user or shared)."""
        digest = token_digest(token)
        return digest in self._by_digest or (
            self._shared is not None and hmac.compare_digest(digest, self._shared)
        )

    def user_for(self, principal: Principal, requested: str) -> str:
        """The user a request acts as; PermissionDenied when a user token names another."""
        if principal.mode in ("user_token", "jwt"):
            if requested and requested != principal.user_id:
                raise PermissionDenied("this token may not act as another user")
            return principal.user_id
        return check_user_id(requested) if requested else self._default_user

    def tier_of(self, user_id: str) -> str:
        """The user's tier: the users file's, else its latest JWT's tier claim, else ""."""
        entry = self._users.get(user_id)
        if entry is not None:
            return entry.tier
        return self._jwt_tiers.get(user_id, "")

    def _remember_tier(self, user_id: str, tier: str) -> None:
        # Limits look tiers up by user id; a JWT user's is the one its latest token named.
        if self._jwt_tiers.get(user_id) == tier:
            return
        if tier:
            if len(self._jwt_tiers) >= _MAX_JWT_TIERS:
                self._jwt_tiers.pop(next(iter(self._jwt_tiers)))  # the oldest entry
            self._jwt_tiers[user_id] = tier
        else:
            self._jwt_tiers.pop(user_id, None)

    # --- the users file -------------------------------------------------------------

    def _reload_if_changed(self) -> None:
        if self._file is None:
            return
        now = self._clock()
        if now - self._checked_at < self._reload_interval_s:
            return
        self._checked_at = now
        try:
            signature = _signature(self._file)
            if signature == self._signature:
                return
            entries = load_users(self._file)
        except (OSError, ValueError, AgentError) as exc:
            # Locking everyone out over a typo would be worse than keeping the last good file.
            log.error("users file %s not reloaded, keeping the previous one: %s", self._file, exc)
            return
        self._signature = signature
        before = self._users
        self._install(entries)
        log.info("users file %s reloaded: %d user(s)", self._file, len(entries))
        self._warn_if_empty()
        revoked = frozenset(
            user
            for user, entry in before.items()
            if user not in entries or entries[user].digest != entry.digest
        )
        if revoked:
            log.info("users file: the token of %d user(s) was revoked or changed", len(revoked))
            for listener in self._revoked:
                listener(revoked)

    def on_revoked(self, listener: Callable[[frozenset[str]], None]) -> None:
        """Call ``listener`` with the users whose token a reload revoked, removed or replaced."""
        self._revoked.append(listener)

    async def watch_file(self) -> None:
        """Look for changes of the users file every ``reload_interval_s``, calls or none.

        Without it a change is noticed at the next call; with it a revoked token's
        waiting requests are cancelled even when nobody calls.
        """
        if self._file is None:
            return
        while True:
            await asyncio.sleep(self._reload_interval_s)
            self._reload_if_changed()

    def _warn_if_empty(self) -> None:
        if not self._users:
            log.warning("users file %s lists no users: nobody can sign in", self._file)

    def _install(self, entries: dict[str, UserEntry]) -> None:
        self._users = entries
        self._by_digest = {e.digest: e for e in entries.values()}
        if self._known_tiers is not None:
            for e in entries.values():
                if e.tier and e.tier not in self._known_tiers:
                    log.warning(
                        "user %r has tier %r, which limits.tiers does not define: "
                        "the default limits apply",
                        e.user_id,
                        e.tier,
                    )


def _signature(path: Path) -> tuple[int, ...]:
    """What changes when the file is edited or replaced (an atomic rename gives a new inode)."""
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
