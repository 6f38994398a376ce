"""The gateway's settings: the same file and AGENT_ variables as the service.

The gateway reads only what it needs (api_server.*, grpc.address, sse.*,
logging.*); the service's own sections are left to the service, which checks
them, so one config file serves both processes. Unknown keys and bad values
are ConfigError.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agentconf.files import ConfigError
from agentconf.loading import load
from agentconf.sections import (
    SERVICE_SECTIONS,
    ApiServerSection,
    GrpcSection,
    LoggingSection,
    SseSection,
)

__all__ = ["ConfigError", "GatewaySettings", "load_gateway_settings"]


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
    settings, _file = load(GatewaySettings, config_file, tolerated=dict.fromkeys(SERVICE_SECTIONS))
    return settings
