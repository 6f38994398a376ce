"""Who is calling: bearer tokens to user identities.

Three modes, chosen by configuration:

- per-user tokens (``auth.tokens_file``, see ``service.userfile``): each token
  names one user, with a tier and maybe the admin role; a request that names
  another user is refused;
- a shared token (``IOS_APITOKEN``): a trusted app names the user itself;
- open mode (no token configured): anyone names any user; logged loudly.

Both kinds of token may be configured at once. Tokens are kept and compared
only as SHA-256 digests, in constant time, and never logged. The users file is
re-read when it changes (checked at most once per ``reload_interval_s``, on
the next call), so a revoked token stops working without a restart.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.errors import AgentError, PermissionDenied, Unauthenticated
from service.profiles import validate_user_id as check_user_id
from service.userfile import UserEntry, load_users, parse_users, token_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: a fixed user, or a trusted app that names users.

    Only a user's own token carries the admin role: the shared token and open
    mode can name any user, so they never act as an admin.
    """

    mode: Literal["user_token", "shared_token", "open"]
    user_id: str = ""  # set for user_token
    admin: bool = False


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
    ) -> None:
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
        if users_file is not None:
            self._signature = _signature(users_file)
            self._install(load_users(users_file))
            self._warn_if_empty()
        else:
            self._install(parse_users(dict(user_tokens or {}), "user_tokens"))
        self.open = self._shared is None and not self._users and users_file is None
        if self.open:
            log.warning(
                "NO AUTH TOKEN CONFIGURED: the service is OPEN, any caller may act as any user. "
                "Set IOS_APITOKEN or auth.tokens_file before exposing it."
            )

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
            return Principal("user_token", entry.user_id, entry.admin)
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

    def tier_of(self, user_id: str) -> str:
        """The user's tier in the users file ("" when none is given or the user is not there)."""
        entry = self._users.get(user_id)
        return entry.tier if entry is not None else ""

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
        self._install(entries)
        log.info("users file %s reloaded: %d user(s)", self._file, len(entries))
        self._warn_if_empty()

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
