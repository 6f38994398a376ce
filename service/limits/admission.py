"""What an admitted turn holds of its user's limits until it ends: tokens and a request.

The budgets are checked against what the store says was spent *plus* what the
turns of this process that are still running have reserved. Without the
reservation, twenty turns admitted at once all see the same spend and all fit.
Each turn reserves its estimate (input estimate plus output cap) at admission;
so concurrent turns can overshoot a budget by at most one turn's estimate (the
last one admitted while something was left).

A reservation ends exactly once: ``settle`` when the turn ended (after its real
usage is in the store, so the spend is never counted by neither), or ``refund``
when the request was refused after admission (say by ``max_active``): a refund
also gives its request back to the request-rate bucket, since only admitted
requests count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from service.content import Usage
from service.limits.config import ResolvedLimits

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UserHold:
    """One user's running reservations, and the lock that orders admit against settle.

    ``users`` counts coroutines that hold or wait for the lock, so the entry is
    dropped only when nobody can be holding a reference to it.
    """

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reserved: int = 0
    turns: int = 0
    users: int = 0


class Reservations:
    """The running reservations of every user of this process."""

    def __init__(self) -> None:
        self._holds: dict[str, UserHold] = {}

    def hold(self, user_id: str) -> UserHold:
        """The user's entry (created on first use); pair with ``done_with``."""
        found = self._holds.get(user_id)
        if found is None:
            found = self._holds[user_id] = UserHold()
        found.users += 1
        return found

    def done_with(self, user_id: str, hold: UserHold) -> None:
        hold.users -= 1
        if hold.users == 0 and hold.turns == 0 and self._holds.get(user_id) is hold:
            del self._holds[user_id]

    def reserved(self, user_id: str) -> tuple[int, int]:
        """(tokens reserved, running turns) of ``user_id``."""
        found = self._holds.get(user_id)
        return (found.reserved, found.turns) if found is not None else (0, 0)

    def __len__(self) -> int:
        return len(self._holds)


class Admission:
    """An admitted turn's hold on its user's limits; end it with ``settle`` or ``refund``.

    ``limits`` are the user's limits at admission (``max_active`` for the
    scheduler, ``cap_output`` for the model call). Ending twice is harmless:
    only the first call counts, so a ``finally`` may settle what an ``except``
    already refunded.
    """

    __slots__ = ("_end", "_ended", "limits", "reserved", "user_id")

    def __init__(
        self,
        user_id: str,
        limits: ResolvedLimits,
        reserved: int,
        end: Callable[[Admission, bool], Awaitable[None]],
    ) -> None:
        self.user_id = user_id
        self.limits = limits
        self.reserved = reserved  # tokens held against the budgets (0: no budget applies)
        self._end = end
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    async def settle(self, usage: Usage) -> None:
        """The turn ended having spent ``usage``: drop the reservation.

        Call it once the usage is stored (the budgets then read it from the store).
        """
        if self._ended:
            return
        self._ended = True
        spent = usage.input_tokens + usage.output_tokens
        if self.reserved and spent > self.reserved:
            # The overshoot bound holds only while estimates hold; say when one did not.
            log.info(
                "turn of user %r spent %d tokens, over its reservation of %d",
                self.user_id,
                spent,
                self.reserved,
            )
        await self._end(self, False)

    async def refund(self) -> None:
        """The request was refused after admission: drop the reservation, give the request back."""
        if self._ended:
            return
        self._ended = True
        await self._end(self, True)
