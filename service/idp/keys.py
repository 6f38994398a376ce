"""The issuer's signing keys: fetched with an async client, cached, refreshed sparingly.

A verification never waits on the network while the key it needs is cached.
The set is fetched at start, again (in the background) when it is older than
``max_age_s``, and when a token names a ``kid`` the set lacks (how a key
rotation shows; that token waits for the fetch). All of
these go through one gate: at most one fetch per ``min_refresh_interval_s``,
and one fetch in flight that concurrent callers share, so a flood of made-up
``kid``s costs at most one fetch per interval. A failed fetch keeps the keys
already held: an identity provider that is down does not lock users out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

log = logging.getLogger(__name__)

# Key types that can verify an asymmetric signature; "oct" (a shared secret) never can.
_ASYMMETRIC_KTY = {"RSA", "EC", "OKP"}


class KeySetError(Exception):
    """The key set could not be fetched or read."""


def parse_jwks(document: object) -> dict[str, Mapping[str, Any]]:
    """``{kid: jwk}`` of the signature keys of a JWKS document; KeySetError if it is not one."""
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise KeySetError('not a JWK set: expected a JSON object with a "keys" list')
    found: dict[str, Mapping[str, Any]] = {}
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("kty") not in _ASYMMETRIC_KTY:
            continue
        if jwk.get("use", "sig") != "sig":
            continue  # an encryption key of the same issuer
        found[str(jwk.get("kid", ""))] = jwk
    if not found:
        raise KeySetError("the JWK set holds no asymmetric signature key")
    return found


def read_jwks_file(path: Path) -> dict[str, Mapping[str, Any]]:
    """The signature keys of a JWKS file; KeySetError naming the file when it is unusable."""
    try:
        return parse_jwks(json.loads(path.read_text()))
    except (OSError, ValueError, KeySetError) as exc:
        raise KeySetError(f"{path}: {exc}") from None


class KeySet:
    """The cached keys of one issuer, from ``url`` (async fetch) or ``file``."""

    def __init__(
        self,
        *,
        url: str = "",
        file: Path | None = None,
        client: httpx.AsyncClient | None = None,
        min_refresh_interval_s: float = 60.0,
        max_age_s: float = 3600.0,
        fetch_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._file = file
        self._client = client or httpx.AsyncClient(timeout=fetch_timeout_s)
        self._owns_client = client is None
        self._min_interval = min_refresh_interval_s
        self._max_age = max_age_s
        self._clock = clock
        self._jwks: dict[str, Mapping[str, Any]] = {}
        self._parsed: dict[tuple[str, str], PyJWK] = {}
        self._fetched_at: float | None = None  # last success
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._in_flight: asyncio.Task[None] | None = None
        self.fetches = 0  # attempts, for the log and tests
        self.last_error = ""

    @property
    def source(self) -> str:
        return self._url or str(self._file)

    @property
    def loaded(self) -> bool:
        """Whether any key set was ever fetched."""
        return self._fetched_at is not None

    def key(self, kid: str, algorithm: str) -> PyJWK | None:
        """The key ``kid`` prepared for ``algorithm``; None when the set has no such key.

        Raises PyJWTError when the key exists but cannot serve that algorithm
        (its ``alg`` says otherwise, or its type does not fit).
        """
        prepared = self._parsed.get((kid, algorithm))
        if prepared is not None:
            return prepared
        jwk = self._jwks.get(kid)
        if jwk is None:
            return None
        declared = jwk.get("alg")
        if declared is not None and declared != algorithm:
            raise PyJWTError(f"the signing key is for {declared}, the token says {algorithm}")
        prepared = self._parsed[(kid, algorithm)] = PyJWK(dict(jwk), algorithm)
        return prepared

    def only_kid(self) -> str | None:
        """The kid of the one key held, for tokens without a kid; None with 0 or 2+ keys."""
        return next(iter(self._jwks)) if len(self._jwks) == 1 else None

    @property
    def stale(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at > self._max_age

    async def refresh(self) -> bool:
        """Fetch the set unless one was tried within the interval; True if a fetch ran now.

        Concurrent callers share the fetch in flight; it runs as its own task, so
        a caller that is cancelled (its client went away) does not cancel it for
        the others. Failures are logged and kept in ``last_error``; the keys held
        stay in use.
        """
        flight = self._in_flight
        if flight is not None and not flight.done():
            await asyncio.shield(flight)
            return False
        flight = self._start()
        if flight is None:
            return False
        await asyncio.shield(flight)
        return True

    def refresh_soon(self) -> None:
        """Start a refresh (within the same limits) without waiting for it: for a stale set,
        whose keys still serve, so a slow or hung issuer delays no request."""
        flight = self._in_flight
        if flight is None or flight.done():
            self._start()

    async def idle(self) -> None:
        """Wait until no fetch is in flight."""
        flight = self._in_flight
        if flight is not None:
            await asyncio.shield(flight)

    def _start(self) -> asyncio.Task[None] | None:
        now = self._clock()
        if self._attempted_at is not None and now - self._attempted_at < self._min_interval:
            return None
        self._attempted_at = now
        self._in_flight = asyncio.get_running_loop().create_task(self._fetch())
        return self._in_flight

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            jwks = await self._load()
        except KeySetError as exc:
            self.last_error = str(exc)
            held = f"keeping the {len(self._jwks)} key(s) held" if self._jwks else "no key held"
            log.warning("JWT key set from %s not loaded (%s): %s", self.source, held, exc)
            return
        if set(jwks) != set(self._jwks):
            log.info("JWT key set from %s: key ids %s", self.source, sorted(jwks))
        self._jwks = jwks
        self._parsed = {}
        self._fetched_at = self._clock()
        self.last_error = ""

    async def _load(self) -> dict[str, Mapping[str, Any]]:
        if self._file is not None:
            # A small local file; read off the loop all the same.
            return await asyncio.to_thread(read_jwks_file, self._file)
        try:
            response = await self._client.get(self._url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise KeySetError(f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise KeySetError(f"HTTP {response.status_code}")
        try:
            return parse_jwks(response.json())
        except ValueError:
            raise KeySetError("the response is not JSON") from None

    async def aclose(self) -> None:
        flight = self._in_flight
        if flight is not None and not flight.done():
            flight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flight
        if self._owns_client:
            await self._client.aclose()
