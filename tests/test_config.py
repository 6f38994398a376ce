"""Settings: defaults < config file < environment, and the original spec's names."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest

from agentconf.files import ConfigError
from gateway.config import load_gateway_settings
from service.config import Settings, load_settings


def test_defaults() -> None:
    s = Settings()
    assert s.api_server.port == 8000 and s.api_server.workers == 2
    assert s.grpc.address == "127.0.0.1:50051"
    assert s.ollama.url == "http://127.0.0.1:11434" and s.ollama.parallel == 1
    assert s.store.resolved_url() == "sqlite:///data/agent.db"


def test_history_summaries_are_off_by_default_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = Settings().history
    assert not history.summarize
    assert history.summary_max_tokens == 512 and "summary" in history.summary_prompt
    monkeypatch.setenv("AGENT_HISTORY__SUMMARIZE", "true")
    monkeypatch.setenv("AGENT_HISTORY__SUMMARY_MAX_TOKENS", "200")
    loaded = load_settings().history
    assert loaded.summarize and loaded.summary_max_tokens == 200
    for bad in ({"summary_max_tokens": 8}, {"summary_prompt": "  "}, {"summarise": True}):
        with pytest.raises(pydantic.ValidationError):
            Settings(history=bad)
    # A budget below the summary cap is a mistake only while summaries are on.
    monkeypatch.setenv("AGENT_API__HISTORY_BUDGET_TOKENS", "150")
    with pytest.raises(ConfigError, match=r"must not be above api\.history_budget_tokens"):
        load_settings()
    monkeypatch.setenv("AGENT_HISTORY__SUMMARIZE", "false")
    assert load_settings().api.history_budget_tokens == 150


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


def test_mcp_servers_from_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_CONFIG", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text(
        "tools:\n  mcp_servers:\n"
        "    - name: time\n      command: python\n      args: ['-m', 'mcp_server_time']\n"
        "      allowed_tools: [get_current_time]\n"
        "    - name: search\n      transport: http\n      url: http://127.0.0.1:9000/mcp\n"
        "      headers: {Authorization: Bearer x}\n      timeout_s: 5\n"
    )
    servers = load_settings(str(config)).tools.mcp_servers
    assert [(s.name, s.transport) for s in servers] == [("time", "stdio"), ("search", "http")]
    assert servers[0].args == ["-m", "mcp_server_time"] and servers[0].timeout_s is None
    assert servers[0].allowed_tools == ["get_current_time"] and servers[1].allowed_tools is None
    assert servers[1].headers == {"Authorization": "Bearer x"} and servers[1].timeout_s == 5


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ([{"name": "a", "transport": "stdio"}], "needs a command"),
        ([{"name": "a", "transport": "http"}], "needs an http(s) url"),
        ([{"name": "a", "transport": "http", "url": "ftp://x"}], "needs an http(s) url"),
        ([{"name": "a__b", "command": "x"}], "must not contain '__'"),
        ([{"name": "a b", "command": "x"}], "should match pattern"),
        ([{"name": "a", "command": "x"}, {"name": "a", "command": "y"}], "must be unique: a"),
        ([{"name": "a", "command": "x", "timeout_s": 60}], "above tools.timeout_s 10"),
        ([{"name": "a", "command": "x", "transport": "sse"}], "'stdio' or 'http'"),
    ],
)
def test_bad_mcp_servers_are_clear_errors(servers: list[dict], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings(tools={"mcp_servers": servers})


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
