"""Settings: defaults < config file < environment, and the original spec's names."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_gateway_settings
from service.config import Settings, load_settings
from service.config_file import ConfigError


def test_defaults() -> None:
    s = Settings()
    assert s.api_server.port == 8000 and s.api_server.workers == 2
    assert s.grpc.address == "127.0.0.1:50051"
    assert s.ollama.url == "http://127.0.0.1:11434" and s.ollama.parallel == 1
    assert s.store.resolved_url() == "sqlite:///data/agent.db"


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "IOS_APITOKEN", "AGENT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "c.yaml"
    config.write_text(
        "api_server:\n  port: 9000\n  workers: 3\nollama:\n  model: qwen3\n"
        "grpc:\n  address: 127.0.0.1:6000\n"
    )
    monkeypatch.setenv("AGENT_API_SERVER__PORT", "9100")
    s = load_settings(str(config))
    assert s.api_server.port == 9100  # environment beats the file
    assert s.api_server.workers == 3  # the file beats the default
    assert s.ollama.model == "qwen3"
    assert s.provider == "ollama"
    g = load_gateway_settings(str(config))  # the gateway reads the same file
    assert g.api_server.port == 9100 and g.grpc.address == "127.0.0.1:6000"


def test_original_spec_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-x")
    monkeypatch.setenv("IOS_APITOKEN", "shared")
    s = load_settings()
    assert s.anthropic.api_key == "sk-x" and s.provider == "anthropic"
    assert s.auth.shared_token == "shared"
    monkeypatch.setenv("AGENT_API__PROVIDER", "ollama")
    assert load_settings().provider == "ollama"


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(str(tmp_path / "nope.yaml"))
