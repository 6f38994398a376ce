"""The ``limits`` section: defaults for everyone and ``limits.tiers.<name>`` overrides.

In the defaults, 0 or an absent key means unlimited. In a tier, an absent
key inherits the default and 0 means unlimited for that tier.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

_FIELDS = (
    "requests_per_minute",
    "max_active",
    "tokens_per_day",
    "tokens_per_month",
    "max_output_tokens",
)


class LimitSet(BaseModel):
    """Limits of one tier; None means "as the defaults"."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(None, ge=0)
    max_active: int | None = Field(None, ge=0)
    tokens_per_day: int | None = Field(None, ge=0)
    tokens_per_month: int | None = Field(None, ge=0)
    max_output_tokens: int | None = Field(None, ge=0)


class TokenWeights(BaseModel):
    """What one prompt-cache token counts against the token budgets, in input tokens.

    Budgets count input + output tokens one for one; the defaults give cache
    reads and writes the weight Anthropic bills them with (0.1x and 1.25x the
    input price), so a long cached conversation is charged what it costs.
    """

    model_config = ConfigDict(extra="forbid")

    cache_read: float = Field(0.1, ge=0.0)
    cache_creation: float = Field(1.25, ge=0.0)

    def billed(self, tokens: int, cache_creation: int, cache_read: int) -> int:
        """Budget tokens of ``tokens`` (input + output) plus the weighted cache tokens."""
        return tokens + round(cache_creation * self.cache_creation + cache_read * self.cache_read)


class LimitsSection(LimitSet):
    """The defaults, plus named tiers that override any of them."""

    tiers: dict[str, LimitSet] = Field(default_factory=dict)
    weights: TokenWeights = Field(default_factory=TokenWeights)

    def resolve(self, tier: str) -> ResolvedLimits:
        """The limits that apply to a user of ``tier`` ("" or unknown: the defaults)."""
        override = self.tiers.get(tier) if tier else None
        values: dict[str, int] = {}
        for name in _FIELDS:
            chosen = getattr(override, name) if override is not None else None
            if chosen is None:
                chosen = getattr(self, name)
            values[name] = chosen or 0
        return ResolvedLimits(tier=tier if override is not None else "", **values)


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    """The limits of one user; 0 means unlimited. ``tier`` is "" for the defaults."""

    tier: str
    requests_per_minute: int
    max_active: int
    tokens_per_day: int
    tokens_per_month: int
    max_output_tokens: int

    def cap_output(self, max_tokens: int) -> int:
        """``max_tokens`` of a model call, lowered to this user's cap."""
        if self.max_output_tokens:
            return min(max_tokens, self.max_output_tokens)
        return max_tokens
