"""The body of ``GET /api/status`` (the GetStatus reply), field for field.

Kept apart from the other bodies because it is the largest: providers, the
queue per provider and per host, MCP servers, and the caller's limits and
budget. ``gateway.convert.status`` fills exactly these fields; a test
compares real answers with this schema, extra fields forbidden.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gateway.models import UsageBody


class ProviderStatusBody(BaseModel):
    """One provider's reachability."""

    name: str
    model: str
    reachable: bool
    detail: str
    version: str
    model_available: bool | None = Field(
        description="Whether the model is installed; null: unknown"
    )


class HostBody(BaseModel):
    """One Ollama host of the pool."""

    url: str
    state: Literal["up", "down", "unspecified"]
    since: str = Field(description="When the host entered this state (ISO 8601, UTC); may be empty")
    slots: int
    running: int
    models: list[str] = Field(description="Models installed on the host")
    models_loaded: list[str] = Field(description="Models loaded in memory")
    last_error: str


class ProviderQueueBody(BaseModel):
    """One provider's slots and waiting requests."""

    provider: str
    slots: int
    running: int
    waiting: int
    waiting_by_priority: dict[str, int]
    avg_wait_s: float
    avg_service_s: float
    hosts: list[HostBody] = Field(description="The provider's hosts (Ollama pools); else empty")


class QueueStatsBody(BaseModel):
    """Queue figures of the whole service."""

    waiting: int
    running: int
    max_pending: int
    max_pending_per_user: int
    providers: list[ProviderQueueBody]


class McpServerBody(BaseModel):
    """One configured MCP server."""

    name: str
    transport: str
    state: Literal["connecting", "ready", "unavailable", "stopped", "unspecified"]
    tools: list[str] = Field(description="The tool names the model sees")
    last_error: str
    restarts: int


class UserLimitsBody(BaseModel):
    """The limits of the caller's tier (0: no limit)."""

    tier: str = Field(description="The tier's name; empty when the default limits apply")
    requests_per_minute: int
    max_active: int
    tokens_per_day: int
    tokens_per_month: int
    max_output_tokens: int


class TokenBudgetBody(BaseModel):
    """What the caller spent, and what is left of each token budget."""

    spent_today: int
    spent_this_month: int
    left_today: int | None = Field(description="null: no daily budget")
    left_this_month: int | None = Field(description="null: no monthly budget")
    day_resets_at: str = Field(description="ISO 8601, UTC")
    month_resets_at: str = Field(description="ISO 8601, UTC")


class StatusResponse(BaseModel):
    """Provider, model, reachability, queue figures, active users, the caller's usage."""

    status: str
    provider: str
    model: str
    version: str
    providers: list[ProviderStatusBody]
    queue_stats: QueueStatsBody
    active_users: int
    user_id: str
    user_usage: UsageBody
    mcp_servers: list[McpServerBody]
    user_limits: UserLimitsBody
    user_budget: TokenBudgetBody
    caller_admin: bool = Field(description="Whether the caller's token is an admin's")
    identity_source: Literal["jwt", "user_token", "shared_token", "open"] = Field(
        description="How the caller was identified (the caller's tier is user_limits.tier)"
    )
