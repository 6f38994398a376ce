"""Settings: defaults < config file < environment, and the original spec's names."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from gateway.config import load_gateway_settings
from service.config import Settings, load_settings


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
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_settings(str(tmp_path / "nope.yaml"))


def test_ollama_backends_are_the_pool_and_url_parallel_the_one_host_shorthand() -> None:
    assert [(h.url, h.parallel, h.models) for h in Settings().ollama.hosts()] == [
        ("http://127.0.0.1:11434", 1, [])
    ]
    pool = Settings(
        ollama={
            "backends": [
                {"url": "http://gpu1:11434/", "parallel": 2, "models": ["m1"]},
                {"url": "http://gpu2:11434"},
            ]
        }
    )
    assert [(h.url, h.parallel, h.models) for h in pool.ollama.hosts()] == [
        ("http://gpu1:11434", 2, ["m1"]),
        ("http://gpu2:11434", 1, []),
    ]
    assert (pool.ollama.health_interval_s, pool.ollama.unhealthy_after) == (5.0, 2)


def test_ollama_backend_mistakes_are_each_named() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(
            ollama={
                "backends": [{"url": "gpu1:11434", "parallel": 0, "models": [" "]}],
                "health_interval_s": 0,
                "unhealthy_after": 0,
            }
        )
    where = {".".join(str(p) for p in e["loc"]): e["msg"] for e in caught.value.errors()}
    assert set(where) == {
        "ollama.backends.0.url",
        "ollama.backends.0.parallel",
        "ollama.backends.0.models",
        "ollama.health_interval_s",
        "ollama.unhealthy_after",
    }
    assert "not an http(s) URL" in where["ollama.backends.0.url"]
    with pytest.raises(pydantic.ValidationError, match="listed twice"):
        Settings(ollama={"backends": [{"url": "http://a:1"}, {"url": "http://a:1/"}]})
