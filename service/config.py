"""The service's settings: defaults < config file < environment.

Every file key ``section.key`` can be overridden by ``AGENT_<SECTION>__<KEY>``;
the original spec's names ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL`` and
``IOS_APITOKEN`` are honoured too. Tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = Path("config/config.yaml")


class ApiSection(BaseModel):
    """Which provider answers, and how the agent behaves."""

    provider: Literal["auto", "anthropic", "ollama"] = "auto"
    system_prompt: str = "You are a helpful assistant. Answer concisely."
    max_tokens: int = Field(1024, ge=1)
    max_tool_rounds: int = Field(5, ge=0)
    history_budget_tokens: int = Field(8000, ge=100)
    max_message_chars: int = Field(100_000, ge=1)
    allow_overrides: bool = True  # may a request pick another provider/model?


class ApiServerSection(BaseModel):
    """The HTTP gateway's settings (the service reads request_timeout)."""

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(2, ge=1)
    log_level: str = "info"
    enable_cors: bool = True
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    request_timeout: float = Field(300.0, gt=0)


class GrpcSection(BaseModel):
    """Where the service listens (and the gateway dials)."""

    address: str = "127.0.0.1:50051"
    shutdown_grace_s: float = Field(30.0, ge=0)


class AnthropicSection(BaseModel):
    """The Anthropic Messages API."""

    api_key: str = ""
    base_url: str = ""  # empty: the SDK's default
    model: str = "claude-sonnet-5-5"
    max_concurrency: int = Field(8, ge=1)
    max_retries: int = Field(2, ge=0)


class OllamaSection(BaseModel):
    """The local Ollama server."""

    url: str = "http://127.0.0.1:11434"
    model: str = "llama3.2"
    parallel: int = Field(1, ge=1)


class ProviderTimeouts(BaseModel):
    """How long to wait on an upstream before calling it hung."""

    first_byte_timeout_s: float = Field(120.0, gt=0)
    idle_timeout_s: float = Field(60.0, gt=0)


class QueueSection(BaseModel):
    """Caps and fairness of the request queue."""

    max_pending: int = Field(100, ge=1)
    max_pending_per_user: int = Field(10, ge=1)
    aging_interval_s: float = Field(30.0, gt=0)
    retention_s: float = Field(600.0, ge=0)


class StreamSection(BaseModel):
    """What becomes of a streamed request whose client goes away, and its event buffer."""

    on_disconnect: Literal["cancel", "continue"] = "cancel"
    resume_window_s: float = Field(120.0, gt=0)  # buffer kept this long after the end
    buffer_events: int = Field(2000, ge=1)  # per request; the oldest go first
    buffer_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)  # all buffers together


class StoreSection(BaseModel):
    """Where conversations live."""

    url: str = ""  # empty: SQLite under data_dir
    data_dir: Path = Path("data")

    def resolved_url(self) -> str:
        return self.url or f"sqlite:///{self.data_dir / 'agent.db'}"


class AuthSection(BaseModel):
    """Who may call, and as whom."""

    tokens_file: Path | None = None
    shared_token: str = ""  # IOS_APITOKEN
    default_user: str = "default"


class ToolsSection(BaseModel):
    """Tools offered to the model."""

    extra: list[str] = Field(default_factory=list)  # import paths "pkg.module:attr"
    timeout_s: float = Field(10.0, gt=0)


class ProfilesSection(BaseModel):
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
        for env_name, (section, key) in self.NAMES.items():
            value = os.environ.get(env_name)
            if value:
                found.setdefault(section, {})[key] = value
        return found


class Settings(BaseSettings):
    """Everything the service reads from configuration."""

    model_config = SettingsConfigDict(
        env_prefix="AGENT_", env_nested_delimiter="__", extra="ignore", yaml_file=None
    )

    api: ApiSection = Field(default_factory=ApiSection)
    api_server: ApiServerSection = Field(default_factory=ApiServerSection)
    grpc: GrpcSection = Field(default_factory=GrpcSection)
    anthropic: AnthropicSection = Field(default_factory=AnthropicSection)
    ollama: OllamaSection = Field(default_factory=OllamaSection)
    providers: ProviderTimeouts = Field(default_factory=ProviderTimeouts)
    queue: QueueSection = Field(default_factory=QueueSection)
    stream: StreamSection = Field(default_factory=StreamSection)
    store: StoreSection = Field(default_factory=StoreSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    tools: ToolsSection = Field(default_factory=ToolsSection)
    profiles: ProfilesSection = Field(default_factory=ProfilesSection)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _LegacyEnvSource(settings_cls),
            YamlConfigSettingsSource(settings_cls),
        )

    @property
    def provider(self) -> Literal["anthropic", "ollama"]:
        """The default provider, with ``auto`` resolved."""
        if self.api.provider == "auto":
            return "anthropic" if self.anthropic.api_key else "ollama"
        return self.api.provider


def config_file_path(explicit: str | None = None) -> Path | None:
    """--config, else AGENT_CONFIG, else config/config.yaml when it exists."""
    chosen = explicit or os.environ.get("AGENT_CONFIG")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(config_file: str | None = None) -> Settings:
    """Settings from the config file (if any) and the environment."""
    path = config_file_path(config_file)

    class FileSettings(Settings):
        model_config = SettingsConfigDict(yaml_file=path)

    return FileSettings()
