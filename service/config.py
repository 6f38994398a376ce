"""The service's settings: defaults < config file < environment.

Every file key ``section.key`` can be overridden by ``AGENT_<SECTION>__<KEY>``;
the original spec's names ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL`` and
``IOS_APITOKEN`` are honoured too. Tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from agentconf.files import ConfigError, ConfigFile, env_name
from agentconf.loading import AgentSettings, load
from agentconf.sections import (
    ApiServerSection,
    GrpcSection,
    LoggingSection,
    Section,
    SseSection,
)
from service.errors import AgentError
from service.idp.config import JwtSection
from service.idp.keys import KeySetError, read_jwks_file
from service.limits.config import LimitsSection
from service.userfile import load_users


class ApiSection(Section):
    """Which provider answers, and how the agent behaves."""

    provider: Literal["auto", "anthropic", "ollama"] = "auto"
    system_prompt: str = "You are a helpful assistant. Answer concisely."
    max_tokens: int = Field(1024, ge=1)
    max_tool_rounds: int = Field(5, ge=0)
    history_budget_tokens: int = Field(8000, ge=100)
    # When the history outgrows the budget it is cut down to this share of it, then
    # grows again: the prompt's prefix stays the same between cuts (provider caches).
    history_watermark: float = Field(0.7, gt=0.0, le=1.0)
    max_message_chars: int = Field(100_000, ge=1)
    allow_overrides: bool = True  # may a request pick another provider/model?


# The instruction of a summary request (history.summary_prompt).
DEFAULT_SUMMARY_PROMPT = (
    "You keep the memory of a conversation between a user and an AI assistant. Write a "
    "concise summary of the conversation you are given, folding in the summary so far if "
    "there is one. Keep what the assistant will need later: facts about the user, their "
    "goals and preferences, decisions made, results of tool calls, and open questions. "
    "Write only the summary, in the third person, without a preamble."
)


class HistorySection(Section):
    """Summaries of the history a cut drops (the budget and watermark are ``api.history_*``).

    Off by default: when the stepped window cuts the history, the dropped part is
    summarized in the background by the same provider (a low-priority request,
    charged to the user) and put at the head of later prompts.
    """

    summarize: bool = False
    # The output cap of a summary request; the summary rides on top of the history budget.
    summary_max_tokens: int = Field(512, ge=32)
    summary_prompt: str = Field(DEFAULT_SUMMARY_PROMPT, min_length=1)

    @field_validator("summary_prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class AnthropicSection(Section):
    """The Anthropic Messages API."""

    api_key: str = ""
    base_url: str = ""  # empty: the SDK's default
    model: str = "claude-sonnet-5-5"
    max_concurrency: int = Field(8, ge=1)
    max_retries: int = Field(2, ge=0)
    # cache_control breakpoints on the system prompt and the end of the history:
    # later turns read that prefix from the prompt cache (0.1x the input price).
    prompt_caching: bool = True


class OllamaBackend(BaseModel):
    """One Ollama host of a pool."""

    model_config = ConfigDict(extra="forbid")

    url: str
    parallel: int = Field(1, ge=1)
    models: list[str] = Field(default_factory=list)  # empty: whatever its /api/tags lists

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL such as http://10.0.0.5:11434")
        return value.strip().rstrip("/")

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        names = [m.strip() for m in value]
        if any(not m for m in names):
            raise ValueError("model names must not be empty")
        return names


class OllamaSection(Section):
    """The local Ollama server, or a pool of them (``backends``)."""

    url: str = "http://127.0.0.1:11434"
    model: str = "llama3.2"
    parallel: int = Field(1, ge=1)
    # A pool of hosts; when empty, ``url`` and ``parallel`` are the one host.
    backends: list[OllamaBackend] = Field(default_factory=list)
    health_interval_s: float = Field(5.0, gt=0)
    unhealthy_after: int = Field(2, ge=1)  # failed probes in a row that mark a host down
    # Chats failed in a row (the host's fault) that take a host out, and the least time it
    # then stays out before a passing health check lets it back in on trial.
    breaker_failures: int = Field(3, ge=1)
    breaker_open_s: float = Field(10.0, ge=0)

    @field_validator("backends")
    @classmethod
    def _distinct(cls, value: list[OllamaBackend]) -> list[OllamaBackend]:
        seen: set[str] = set()
        for backend in value:
            if backend.url in seen:
                raise ValueError(f"{backend.url} is listed twice")
            seen.add(backend.url)
        return value

    def hosts(self) -> list[OllamaBackend]:
        """The configured hosts: ``backends``, or the one host ``url``/``parallel`` name."""
        if self.backends:
            return list(self.backends)
        # Not re-validated: the shorthand ``url`` keeps the rules it always had.
        return [OllamaBackend.model_construct(url=self.url.rstrip("/"), parallel=self.parallel)]


class ProviderTimeouts(Section):
    """How long to wait on an upstream before calling it hung."""

    first_byte_timeout_s: float = Field(120.0, gt=0)
    idle_timeout_s: float = Field(60.0, gt=0)


class QueueSection(Section):
    """Caps and fairness of the request queue (per-user quotas are in ``limits``)."""

    max_pending: int = Field(100, ge=1)
    max_pending_per_user: int = Field(10, ge=1)
    aging_interval_s: float = Field(30.0, gt=0, allow_inf_nan=False)
    retention_s: float = Field(600.0, ge=0)
    # A waiting request's position is told at most this often (the latest one, never a
    # stale one): thousands of waiting clients must not each get every move of the queue.
    position_interval_s: float = Field(1.0, gt=0)


class SchedulerSection(Section):
    """Which engine keeps the request queue: this process, or PostgreSQL shared by replicas."""

    backend: Literal["memory", "postgres"] = "memory"
    lease_s: float = Field(10.0, gt=0)  # how long a silent replica keeps its grants
    replica_id: str = Field("", max_length=200)  # empty: host name + pid

    def resolved_replica_id(self) -> str:
        return self.replica_id or f"{socket.gethostname()}-{os.getpid()}"


class StreamSection(Section):
    """What becomes of a streamed request whose client goes away, and its event buffer."""

    on_disconnect: Literal["cancel", "continue"] = "cancel"
    resume_window_s: float = Field(120.0, gt=0)  # buffer kept this long after the end
    buffer_events: int = Field(2000, ge=1)  # per request; the oldest go first
    buffer_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)  # all buffers together


class StoreSection(Section):
    """Where conversations live."""

    url: str = ""  # empty: SQLite under data_dir
    data_dir: Path = Path("data")

    def resolved_url(self) -> str:
        return self.url or f"sqlite:///{self.data_dir / 'agent.db'}"


class AuthSection(Section):
    """Who may call, and as whom."""

    tokens_file: Path | None = None
    shared_token: str = ""  # IOS_APITOKEN
    default_user: str = "default"
    reload_interval_s: float = Field(1.0, gt=0)  # how often the tokens file is checked
    jwt: JwtSection = Field(default_factory=JwtSection)  # an identity provider's tokens


class McpServerSection(BaseModel):
    """One Model Context Protocol server whose tools the model may use."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, as in a section

    # Tools are offered as "<name>__<tool>", so the name may not contain "__" itself:
    # that keeps every offered name traceable to exactly one server.
    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,32}$")
    transport: Literal["stdio", "http"] = "stdio"
    command: str = ""  # stdio: the program the service starts and owns
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # stdio: added to a minimal environment
    url: str = ""  # http: the streamable HTTP endpoint, e.g. http://host:8000/mcp
    headers: dict[str, str] = Field(default_factory=dict)  # http: sent with every request
    allowed_tools: list[str] | None = None  # the server's tool names to offer; None: all
    timeout_s: float | None = Field(None, gt=0)  # per call; None: tools.timeout_s
    connect_timeout_s: float = Field(30.0, gt=0)  # start (or restart) plus listing the tools
    # A message (a stdio line, an HTTP JSON body or SSE event) longer than this is dropped
    # and its call ends with an error, so one huge tool result cannot fill memory or CPU.
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _check(self) -> McpServerSection:
        if "__" in self.name:
            raise ValueError(f"MCP server name {self.name!r} must not contain '__'")
        if self.transport == "stdio" and not self.command:
            raise ValueError(f"MCP server {self.name!r}: transport stdio needs a command")
        if self.transport == "http" and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"MCP server {self.name!r}: transport http needs an http(s) url")
        return self


class ToolsSection(Section):
    """Tools offered to the model."""

    extra: list[str] = Field(default_factory=list)  # import paths "pkg.module:attr"
    timeout_s: float = Field(10.0, gt=0)
    mcp_servers: list[McpServerSection] = Field(default_factory=list)
    # A server that exits or cannot be reached is retried after this delay,
    # doubled after each failure up to the maximum, back to the start once it connects.
    mcp_retry_initial_s: float = Field(1.0, gt=0)
    mcp_retry_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> ToolsSection:
        names = [server.name for server in self.mcp_servers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"MCP server names must be unique: {', '.join(duplicates)}")
        for server in self.mcp_servers:
            # tools.timeout_s is the ceiling for every tool; say so instead of capping silently.
            if server.timeout_s is not None and server.timeout_s > self.timeout_s:
                raise ValueError(
                    f"MCP server {server.name!r}: timeout_s {server.timeout_s:g} is above "
                    f"tools.timeout_s {self.timeout_s:g}; raise tools.timeout_s as well"
                )
        if self.mcp_retry_max_s < self.mcp_retry_initial_s:
            raise ValueError("tools.mcp_retry_max_s must be at least tools.mcp_retry_initial_s")
        return self


class MetricsSection(Section):
    """Where the service serves Prometheus metrics."""

    # host:port for GET /metrics; empty turns the endpoint off.
    address: str = "127.0.0.1:9464"

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value and (":" not in value or not value.rsplit(":", 1)[1].isdigit()):
            raise ValueError("must be host:port (for example 127.0.0.1:9464), or empty for off")
        return value


class ProfilesSection(Section):
    """Per-user display names and system-prompt additions."""

    directory: Path | None = None


class _LegacyEnvSource(PydanticBaseSettingsSource):
    """The original spec's environment names, below the AGENT_ ones."""

    NAMES = {
        "ANTHROPIC_API_KEY": ("anthropic", "api_key"),
        "ANTHROPIC_BASE_URL": ("anthropic", "base_url"),
        "IOS_APITOKEN": ("auth", "shared_token"),
    }

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for variable, (section, key) in self.NAMES.items():
            value = os.environ.get(variable)
            if value:
                found.setdefault(section, {})[key] = value
        return found


class Settings(AgentSettings):
    """Everything the service reads from configuration."""

    api: ApiSection = Field(default_factory=ApiSection)
    history: HistorySection = Field(default_factory=HistorySection)
    api_server: ApiServerSection = Field(default_factory=ApiServerSection)
    grpc: GrpcSection = Field(default_factory=GrpcSection)
    anthropic: AnthropicSection = Field(default_factory=AnthropicSection)
    ollama: OllamaSection = Field(default_factory=OllamaSection)
    providers: ProviderTimeouts = Field(default_factory=ProviderTimeouts)
    queue: QueueSection = Field(default_factory=QueueSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    stream: StreamSection = Field(default_factory=StreamSection)
    store: StoreSection = Field(default_factory=StoreSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    tools: ToolsSection = Field(default_factory=ToolsSection)
    profiles: ProfilesSection = Field(default_factory=ProfilesSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    # The gateway's; here so that the service checks every key of the shared file.
    sse: SseSection = Field(default_factory=SseSection)

    @classmethod
    def more_sources(cls, settings_cls: type[BaseSettings]) -> Sequence[PydanticBaseSettingsSource]:
        return (_LegacyEnvSource(settings_cls),)

    @property
    def provider(self) -> Literal["anthropic", "ollama"]:
        """The default provider, with ``auto`` resolved."""
        if self.api.provider == "auto":
            return "anthropic" if self.anthropic.api_key else "ollama"
        return self.api.provider


_LEGACY_NAMES: dict[tuple[str, ...], str] = {
    (s, k): env for env, (s, k) in _LegacyEnvSource.NAMES.items()
}


def load_settings(config_file: str | None = None) -> Settings:
    """Settings from the config file (if any) and the environment, checked strictly.

    Raises ConfigError (one line naming the key and where it was set) for an
    unreadable file, an unknown key or variable, an invalid value, or a
    provider chosen without what it needs.
    """
    settings, file = load(
        Settings,
        config_file,
        tolerated={},
        also=_LEGACY_NAMES,
    )
    _check_consistency(settings, file, os.environ)
    return settings


def _check_consistency(
    settings: Settings, file: ConfigFile | None, environ: Mapping[str, str]
) -> None:
    """What each value allows alone but not together with the others."""
    if settings.api.provider == "anthropic" and not settings.anthropic.api_key:
        variable = env_name(("api", "provider"), environ)
        where = file.where(("api", "provider")) if file is not None else None
        origin = f"{variable}={environ[variable]!r}" if variable else where or "api.provider"
        raise ConfigError(
            f"{origin}: provider 'anthropic' needs an API key: set ANTHROPIC_API_KEY "
            "(or anthropic.api_key), or choose provider 'ollama'"
        )
    if settings.scheduler.backend == "postgres":
        scheme = settings.store.resolved_url().partition("://")[0].lower()
        if scheme not in ("postgresql", "postgres"):
            variable = env_name(("scheduler", "backend"), environ)
            where = file.where(("scheduler", "backend")) if file is not None else None
            origin = (
                f"{variable}={environ[variable]!r}" if variable else where or "scheduler.backend"
            )
            raise ConfigError(
                f"{origin}: scheduler.backend 'postgres' keeps the queue in the store's "
                f"database, so store.url must be postgresql://... (it is {scheme}://...)"
            )
    history = settings.history
    if history.summarize and history.summary_max_tokens > settings.api.history_budget_tokens:
        key = ("history", "summary_max_tokens")
        variable = env_name(key, environ)
        where = file.where(key) if file is not None else None
        origin = f"{variable}={environ[variable]!r}" if variable else where or ".".join(key)
        raise ConfigError(
            f"{origin}: with history.summarize on, history.summary_max_tokens"
            f" ({history.summary_max_tokens}) must not be above api.history_budget_tokens"
            f" ({settings.api.history_budget_tokens}): the summary rides on top of the history"
            " at the head of every prompt"
        )
    tokens = settings.auth.tokens_file
    if tokens is not None and not tokens.is_file():
        raise ConfigError(f"auth.tokens_file: no such file: {tokens}")
    jwks_file = settings.auth.jwt.jwks_file
    if jwks_file is not None:
        # An offline key set is read here, so --check-config catches a bad one;
        # a jwks_url is never fetched by a check (the issuer may be down for a while).
        try:
            read_jwks_file(jwks_file)
        except KeySetError as exc:
            raise ConfigError(f"auth.jwt.jwks_file: {exc}") from None
    if tokens is not None:
        try:  # at start an invalid users file is a configuration error; a reload keeps the last
            load_users(tokens)
        except (OSError, ValueError, AgentError) as exc:
            raise ConfigError(f"auth.tokens_file: {exc}") from None
