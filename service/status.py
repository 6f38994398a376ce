"""Provider reachability for GetStatus, probed concurrently and cached briefly."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from service.providers.base import Provider, ProviderHealth

log = logging.getLogger(__name__)


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


_WAYS_OUT = {
    "ollama": "start Ollama there (`ollama serve`), set ANTHROPIC_API_KEY to use Anthropic, "
    "point AGENT_OLLAMA__URL at a running Ollama, or try `make demo` (a fake backend)",
    "anthropic": "check ANTHROPIC_API_KEY and the network, set AGENT_API__PROVIDER=ollama "
    "to use a local Ollama, or try `make demo` (a fake backend)",
}


async def startup_probe(name: str, provider: Provider) -> None:
    """Probe the default provider once and say plainly when chats are going to fail."""
    health = await provider.probe()
    if not health.reachable:
        log.warning(
            "default provider %s is not usable, chats will fail with 503 until it is: %s; "
            "to fix: %s",
            name,
            health.detail,
            _WAYS_OUT.get(name, "check its configuration"),
        )
    elif health.model_available is False:
        log.warning("default provider %s: %s", name, health.detail)
    else:
        log.info("default provider %s: %s", name, health.detail)
