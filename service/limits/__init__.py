"""Per-user limits: request rate, active requests, token budgets, output cap; tiers override.

``Limits.admit`` is the one admission check of a model turn (budgets and
request rate); ``max_active`` is enforced by the scheduler at submit, where
a user's waiting and running requests are counted. Every refusal is
``LimitReached`` (RESOURCE_EXHAUSTED, 429) with a retry hint and a message
naming the limit.
"""

from service.limits.config import LimitSet, LimitsSection, ResolvedLimits
from service.limits.limits import Limits, LimitsReport, SpendReader
from service.limits.windows import UtcWindows

__all__ = [
    "LimitSet",
    "Limits",
    "LimitsReport",
    "LimitsSection",
    "ResolvedLimits",
    "SpendReader",
    "UtcWindows",
]
