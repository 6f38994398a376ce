"""Provider reachability for GetStatus, probed concurrently and cached briefly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from service.providers.base import Provider, ProviderHealth


class ProviderProbes:
    """Probes every configured provider at most once per ``ttl_s``."""

    def __init__(self, providers: Mapping[str, Provider], ttl_s: float = 5.0) -> None:
        self._providers = providers
        self._ttl_s = ttl_s
        self._cached: dict[str, ProviderHealth] = {}
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def health(self) -> dict[str, ProviderHealth]:
        async with self._lock:
            if time.monotonic() - self._at >= self._ttl_s:
                names = list(self._providers)
                results = await asyncio.gather(*(self._providers[n].probe() for n in names))
                self._cached = dict(zip(names, results, strict=True))
                self._at = time.monotonic()
            return dict(self._cached)
