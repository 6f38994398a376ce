"""The gateway's settings: the same file and AGENT_ variables as the service.

The gateway reads only what it needs (api_server.*, grpc.address, sse.*);
unknown sections are ignored, so one config file serves both processes.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = Path("config/config.yaml")


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


class GrpcSection(BaseModel):
    """The service to dial."""

    address: str = "127.0.0.1:50051"


class SseSection(BaseModel):
    """Server-Sent Events."""

    keepalive_s: float = Field(15.0, gt=0)


class GatewaySettings(BaseSettings):
    """Everything the gateway reads from configuration."""

    model_config = SettingsConfigDict(
        env_prefix="AGENT_", env_nested_delimiter="__", extra="ignore", yaml_file=None
    )

    api_server: ApiServerSection = Field(default_factory=ApiServerSection)
    grpc: GrpcSection = Field(default_factory=GrpcSection)
    sse: SseSection = Field(default_factory=SseSection)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)


def load_gateway_settings(config_file: str | None = None) -> GatewaySettings:
    """Settings from --config / AGENT_CONFIG / config/config.yaml and the environment."""
    chosen = config_file or os.environ.get("AGENT_CONFIG")
    path: Path | None = None
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
    elif DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE

    class FileSettings(GatewaySettings):
        model_config = SettingsConfigDict(yaml_file=path)

    return FileSettings()
