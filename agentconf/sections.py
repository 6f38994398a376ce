"""The sections of the shared config file that both processes read, and the names of the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# uvicorn's names (the gateway passes the level to it); "trace" is uvicorn's, below debug.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

# Sections only the service reads: the gateway lets them through unchecked, and
# tests/test_config_sections.py checks the list against the service's settings.
SERVICE_SECTIONS = frozenset(
    {
        "api",
        "history",
        "anthropic",
        "ollama",
        "providers",
        "queue",
        "scheduler",
        "stream",
        "store",
        "auth",
        "tools",
        "profiles",
        "limits",
        "metrics",
    }
)


class Section(BaseModel):
    """A section of the config file: a key it does not define is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ApiServerSection(Section):
    """The HTTP gateway's server (the service reads request_timeout and max_body_bytes)."""

    host: str = "127.0.0.1"  # loopback by default: an open gateway is not exposed by accident
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(2, ge=1)
    log_level: str = "info"
    enable_cors: bool = True
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    request_timeout: float = Field(300.0, gt=0)
    # Larger request bodies get 413; the gRPC request-size limits follow it.
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    # After SIGTERM: how long the gateway's open streams may run before they get
    # an `unavailable` event.
    shutdown_grace_s: float = Field(25.0, ge=0)
    # A client must send its request head within header_timeout_s (of connecting or of
    # the previous response) and its body within body_timeout_s of the head: else 408.
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    # The gateway's own files: the uvicorn workers' metrics folder (relative paths are
    # from the working directory, like store.data_dir).
    data_dir: Path = Path("data")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.lower()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level


class GrpcSection(Section):
    """Where the service listens and the gateway dials."""

    address: str = "127.0.0.1:50051"
    # The service's drain on SIGTERM.
    shutdown_grace_s: float = Field(30.0, ge=0)
    # A connection that has not finished the HTTP/2 handshake (its preface and first
    # SETTINGS) in this time is closed, and one with no call for idle_timeout_s is sent
    # GOAWAY (a client reconnects when it next calls); running calls are never touched.
    handshake_timeout_s: float = Field(10.0, gt=0)
    idle_timeout_s: float = Field(300.0, gt=0)


class SseSection(Section):
    """Server-Sent Events (the gateway's)."""

    keepalive_s: float = Field(15.0, gt=0)


class LoggingSection(Section):
    """How both processes write their logs."""

    format: Literal["text", "json"] = "text"
    # Let third-party loggers (the Anthropic SDK, httpx, MCP) log at debug level,
    # which includes request bodies with users' messages. Off: they stay at info.
    include_content: bool = False
