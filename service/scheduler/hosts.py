"""The hosts behind one provider, and which free host a request should run on.

A provider's slots live on its hosts: a pool of Ollama boxes, each with its
own parallelism and its own models. Providers without a pool (Anthropic, the
command lane) have one anonymous host that serves every model.

The choice among free hosts (``choose_host``) is a pure function, so it is
tested without sockets or clocks. Its order of preference:

1. the host that served the previous turn of the same conversation, because
   its prompt cache still holds the conversation's prefix;
2. a host that has the model loaded now, so no request pays for a model load
   another host has already paid for;
3. the least loaded host (the smallest share of its slots in use, then the
   fewest running, then the order of configuration).

A host this request already failed on comes last whatever else it offers;
it is still used rather than leaving a free slot idle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.scheduler.registry import Ticket


def model_aliases(names: Iterable[str]) -> frozenset[str]:
    """Every spelling a model may be asked for by: Ollama's ``name`` means ``name:latest``."""
    out: set[str] = set()
    for name in names:
        out.add(name)
        if ":" not in name:
            out.add(f"{name}:latest")
        elif name.endswith(":latest"):
            out.add(name.removesuffix(":latest"))
    return frozenset(out)


@dataclass(eq=False)
class Host:
    """One host of a provider: its slots, the models it serves, its health.

    ``models`` None means any model (no list configured and none learned yet).
    ``name`` is what a ticket records as its ``backend`` (an Ollama host's URL).
    """

    name: str
    slots: int
    models: frozenset[str] | None = None
    loaded: frozenset[str] = frozenset()
    up: bool = True
    since: float = 0.0  # wall-clock time of the last change between up and down
    last_error: str = ""
    running: set[Ticket] = field(default_factory=set)
    _aliases: frozenset[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"host {self.name!r} needs at least one slot")
        self.set_models(self.models)

    def set_models(self, models: Iterable[str] | None) -> None:
        self.models = None if models is None else frozenset(models)
        self._aliases = None if self.models is None else model_aliases(self.models)

    def serves(self, model: str) -> bool:
        return self._aliases is None or not model or model in self._aliases

    def has_loaded(self, model: str) -> bool:
        return bool(model) and bool(self.loaded & model_aliases((model,)))

    @property
    def free(self) -> bool:
        return self.up and len(self.running) < self.slots


@dataclass(frozen=True, slots=True)
class HostView:
    """One host as callers outside the scheduler see it: a snapshot, not the live record."""

    name: str
    slots: int
    up: bool
    running: int
    models: frozenset[str] | None
    loaded: frozenset[str]
    last_error: str
    since: float

    def serves(self, model: str) -> bool:
        return self.models is None or not model or model in model_aliases(self.models)


def view(host: Host) -> HostView:
    return HostView(
        name=host.name,
        slots=host.slots,
        up=host.up,
        running=len(host.running),
        models=host.models,
        loaded=host.loaded,
        last_error=host.last_error,
        since=host.since,
    )


def choose_host(
    free: Sequence[Host], model: str, *, previous: str | None = None, avoid: Iterable[str] = ()
) -> Host | None:
    """The free host that should run a request for ``model`` (None if none serves it).

    ``previous`` is the host of the conversation's previous turn; ``avoid`` the
    hosts this request already failed on.
    """
    if len(free) == 1:  # the common case: one host, or one free slot left
        only = free[0]
        return only if only.serves(model) else None
    avoided = frozenset(avoid)
    best: Host | None = None
    best_key: tuple[bool, bool, bool, float, int, int] | None = None
    for index, host in enumerate(free):
        if not host.serves(model):
            continue
        key = (
            host.name in avoided,
            host.name != previous,
            not host.has_loaded(model),
            len(host.running) / host.slots,
            len(host.running),
            index,
        )
        if best_key is None or key < best_key:
            best, best_key = host, key
    return best
