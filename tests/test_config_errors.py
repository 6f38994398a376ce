"""Bad configuration: one readable line naming the key (or file and line), exit code 2.

The CLI cases run the installed console scripts in a subprocess (fast: they
fail before anything starts); the rest call the loaders with an explicit
environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentconf.files import ConfigError
from gateway.config import load_gateway_settings
from service.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "config" / "config.example.yaml"


def run(script: str, *args: str, env: dict[str, str] | None = None, cwd: Path) -> tuple[int, str]:
    """Exit code and stderr of a console script with a clean AGENT_/ANTHROPIC_ environment."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AGENT_", "ANTHROPIC_", "IOS_APITOKEN"))
    }
    proc = subprocess.run(
        [str(BIN / script), *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=10,  # a bad configuration fails at once; a process that starts is a failure
    )
    return proc.returncode, proc.stderr


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


BOTH = ("agent-service", "agent-gateway")
SERVICE = ("agent-service",)  # the gateway leaves the service's sections to the service
ENV_CASES = [
    (BOTH, {"AGENT_API_SERVER__PORT": "abc"}, ["AGENT_API_SERVER__PORT", "port", "integer"]),
    (SERVICE, {"AGENT_QUEUE__MAX_PENDING": "-1"}, ["AGENT_QUEUE__MAX_PENDING", "greater than"]),
    (SERVICE, {"AGENT_QUEUE__MAX_PENDNG": "3"}, ["MAX_PENDNG", "did you mean 'max_pending'"]),
    (BOTH, {"AGENT_QUEUE_MAX_PENDING": "3"}, ["did you mean AGENT_QUEUE__MAX_PENDING"]),
    (BOTH, {"AGENT_QUEU__MAX_PENDING": "3"}, ["did you mean 'queue'"]),
    (BOTH, {"AGENT_SSE__KEEPALIVE": "3"}, ["did you mean 'keepalive_s'"]),
    (BOTH, {"AGENT_API_SERVER__CORS_ORIGINS": "x"}, ["AGENT_API_SERVER__CORS_ORIGINS", "JSON"]),
    (BOTH, {"AGENT_API_SERVER__LOG_LEVEL": "loud"}, ["LOG_LEVEL", "must be one of"]),
    (BOTH, {"AGENT_CONFIG": "missing.yaml"}, ["config file not found: missing.yaml"]),
    (SERVICE, {"AGENT_API__PROVIDER": "anthropic"}, ["AGENT_API__PROVIDER", "ANTHROPIC_API_KEY"]),
    (
        SERVICE,
        {"AGENT_SCHEDULER__BACKEND": "postgres"},
        ["AGENT_SCHEDULER__BACKEND='postgres'", "store.url must be postgresql://", "sqlite://"],
    ),
    (SERVICE, {"AGENT_SCHEDULER__BACKEND": "redis"}, ["AGENT_SCHEDULER__BACKEND", "'memory'"]),
    (SERVICE, {"AGENT_SCHEDULER__LEASE_S": "0"}, ["AGENT_SCHEDULER__LEASE_S", "greater than"]),
    (
        SERVICE,
        {"AGENT_HISTORY__SUMMARY_MAX_TOKENS": "9000", "AGENT_HISTORY__SUMMARIZE": "true"},
        ["AGENT_HISTORY__SUMMARY_MAX_TOKENS='9000'", "api.history_budget_tokens (8000)"],
    ),
]
CLI_ENV_CASES = [
    pytest.param(script, env, words, id=f"{script}-{next(iter(env))}")
    for scripts, env, words in ENV_CASES
    for script in scripts
]


@pytest.mark.parametrize(("script", "env", "words"), CLI_ENV_CASES)
def test_bad_environment_is_one_line_and_exit_2(
    tmp_path: Path, script: str, env: dict[str, str], words: list[str]
) -> None:
    code, stderr = run(script, env=env, cwd=tmp_path)
    line = one_line(stderr)
    assert code == 2, stderr
    assert line.startswith(f"{script}: configuration error: ")
    for word in words:
        assert word in line


FILE_CASES = [
    ("queue:\n  max_pendng: 3\n", ["c.yaml:2", "queue.max_pendng", "did you mean 'max_pending'"]),
    ("queue:\n  max_pending: -3\n", ["c.yaml:2", "queue.max_pending", "greater than or equal"]),
    ("qeue:\n  max_pending: 3\n", ["c.yaml:1", "qeue", "did you mean 'queue'"]),
    ("api:\n  provider: [ollama\nqueue: {}\n", ["c.yaml:3:", "invalid YAML"]),
    ("- api\n", ["c.yaml:1", "mapping of sections"]),
    ("api:\n  provider: anthropic\n", ["c.yaml:2", "ANTHROPIC_API_KEY"]),
    ("scheduler:\n  backend: postgres\n", ["c.yaml:2", "store.url must be postgresql://"]),
    ("scheduler:\n  lease: 3\n", ["c.yaml:2", "did you mean 'lease_s'"]),
    ("history:\n  summarise: true\n", ["c.yaml:2", "did you mean 'summarize'"]),
    (
        "api:\n  history_budget_tokens: 400\nhistory:\n  summarize: true\n"
        "  summary_max_tokens: 500\n",
        ["c.yaml:5", "history.summary_max_tokens (500) must not be above"],
    ),
]


@pytest.mark.parametrize(("text", "words"), FILE_CASES)
def test_bad_file_is_one_line_and_exit_2(tmp_path: Path, text: str, words: list[str]) -> None:
    (tmp_path / "c.yaml").write_text(text)
    code, stderr = run("agent-service", "--config", "c.yaml", cwd=tmp_path)
    line = one_line(stderr)
    assert code == 2, stderr
    for word in words:
        assert word in line


def test_gateway_checks_its_own_sections_and_leaves_the_service_its_own(
    tmp_path: Path,
) -> None:
    (tmp_path / "c.yaml").write_text("sse:\n  keepalive: 3\n")
    code, stderr = run("agent-gateway", "--config", "c.yaml", cwd=tmp_path)
    assert code == 2
    assert "c.yaml:2" in one_line(stderr) and "did you mean 'keepalive_s'" in stderr
    service_only = {"queue": {"max_pending": 3}, "grpc": {"shutdown_grace_s": 1}}
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump(service_only))
    code, stderr = run("agent-gateway", "--config", "s.yaml", "--check-config", cwd=tmp_path)
    assert code == 0, stderr


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("AGENT_", "ANTHROPIC_", "IOS_APITOKEN")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_example_config_is_valid_for_both(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(str(EXAMPLE))
    assert settings.api_server.max_body_bytes == 2 * 1024 * 1024
    assert load_gateway_settings(str(EXAMPLE)).sse.keepalive_s == 15


def test_variables_that_are_not_settings_are_left_alone(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENT_TEST_POSTGRES_URL", "postgresql://x")
    clean_env.setenv("AGENT_QUEUE", '{"max_pending": 7}')
    assert load_settings().queue.max_pending == 7


def test_errors_are_config_errors_in_process(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENT_QUEUE__MAX_PENDNG", "3")
    with pytest.raises(ConfigError, match="did you mean 'max_pending'"):
        load_settings()


def test_check_config_prints_the_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    env = {
        "ANTHROPIC_API_KEY": "sk-very-secret",
        "IOS_APITOKEN": "shared-secret",
        "AGENT_STORE__URL": "postgresql://agent:pg-secret@db/agent",
        "AGENT_QUEUE__MAX_PENDING": "7",
    }
    proc = subprocess.run(
        [str(BIN / "agent-service"), "--check-config"],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "secret" not in proc.stdout
    shown = yaml.safe_load(proc.stdout)
    assert shown["queue"]["max_pending"] == 7
    assert shown["anthropic"]["api_key"] == "***"
    assert shown["auth"]["shared_token"] == "***"
    assert shown["store"]["url"] == "postgresql://agent:***@db/agent"
    assert "default provider: anthropic" in proc.stdout
