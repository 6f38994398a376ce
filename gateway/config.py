"""The gateway's settings: the same file and AGENT_ variables as the service.

The gateway reads only what it needs (api_server.*, grpc.address, sse.*,
logging.*, the last shared with the service); the
service's sections are left to the service, which checks them, so one config
file serves both processes. Unknown keys and bad values are ConfigError.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from gateway.config_file import (
    ConfigError,
    MappingSource,
    Tolerated,
    check_env_names,
    check_file_keys,
    describe_settings_error,
    describe_validation_error,
    read_config_file,
)

DEFAULT_CONFIG_FILE = Path("config/config.yaml")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's

# What the service reads from the shared file; the service validates it.
SERVICE_KEYS: Tolerated = {
    **dict.fromkeys(
        (
            "api",
            "anthropic",
            "ollama",
            "providers",
            "queue",
            "scheduler",
            "store",
            "auth",
            "tools",
            "profiles",
            "limits",
            "metrics",
            "stream",
        )
    ),
    "grpc": frozenset({"shutdown_grace_s"}),
    "api_server": frozenset({"max_body_bytes"}),
}


class ApiServerSection(BaseModel):
    """Where and how the HTTP server runs."""

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(2, ge=1)
    log_level: str = "info"
    enable_cors: bool = True
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    request_timeout: float = Field(300.0, gt=0)
    # Larger request bodies get 413; the gRPC request-size limits follow it.
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    # After SIGTERM: how long open streams may run before they get an `unavailable` event.
    shutdown_grace_s: float = Field(25.0, ge=0)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.lower()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level


class GrpcSection(BaseModel):
    """The service to dial."""

    address: str = "127.0.0.1:50051"


class SseSection(BaseModel):
    """Server-Sent Events."""

    keepalive_s: float = Field(15.0, gt=0)


class LoggingSection(BaseModel):
    """Log output; the service reads the same section."""

    format: Literal["text", "json"] = "text"
    # Let third-party loggers go below info (where they may print users' messages).
    include_content: bool = False


class GatewaySettings(BaseSettings):
    """Everything the gateway reads from configuration."""

    model_config = SettingsConfigDict(
        env_prefix="AGENT_", env_nested_delimiter="__", extra="ignore"
    )

    api_server: ApiServerSection = Field(default_factory=ApiServerSection)
    grpc: GrpcSection = Field(default_factory=GrpcSection)
    sse: SseSection = Field(default_factory=SseSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings


def load_gateway_settings(config_file: str | None = None) -> GatewaySettings:
    """Settings from --config / AGENT_CONFIG / config/config.yaml and the environment.

    Raises ConfigError, one line naming the key and where it was set.
    """
    env = os.environ
    chosen = config_file or env.get("AGENT_CONFIG")
    path: Path | None = None
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            origin = "--config" if config_file else "AGENT_CONFIG"
            raise ConfigError(f"config file not found: {path} (from {origin})")
    elif DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    file = read_config_file(path) if path is not None else None
    if file is not None:
        check_file_keys(GatewaySettings, file, SERVICE_KEYS)
    check_env_names(GatewaySettings, env, SERVICE_KEYS)
    data = _own_keys(file.data) if file is not None else {}

    class FileSettings(GatewaySettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, MappingSource(settings_cls, data)

    try:
        return FileSettings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, file, env)) from None
    except SettingsError as exc:
        raise ConfigError(describe_settings_error(exc, GatewaySettings, env)) from None


def _own_keys(data: Mapping[str, object]) -> dict[str, object]:
    """The file without what only the service reads (so it never fails validation here)."""
    own: dict[str, object] = {}
    for section, values in data.items():
        if section not in GatewaySettings.model_fields:
            continue
        skip = SERVICE_KEYS.get(section) or frozenset()
        own[section] = (
            {k: v for k, v in values.items() if k not in skip}
            if isinstance(values, dict)
            else values
        )
    return own
