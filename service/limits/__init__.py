"""Per-user limits: request rate, active requests, token budgets, output cap; tiers override.

``Limits.admit`` is the one admission check of a model turn (budgets and
request rate); it returns an ``Admission`` that the turn settles with its real
usage when it ends, or refunds when it is refused later. ``max_active`` is
enforced by the scheduler at submit, where a user's waiting and running
requests are counted; a request it refuses is refunded, so it does not spend
the request rate. Every refusal is
``LimitReached`` (RESOURCE_EXHAUSTED, 429) with a retry hint and a message
naming the limit.
"""

from service.limits.admission import Admission
from service.limits.config import LimitSet, LimitsSection, ResolvedLimits
from service.limits.limits import Limits, LimitsReport, SpendReader
from service.limits.windows import UtcWindows

__all__ = [
    "Admission",
    "LimitSet",
    "Limits",
    "LimitsReport",
    "LimitsSection",
    "ResolvedLimits",
    "SpendReader",
    "UtcWindows",
]
