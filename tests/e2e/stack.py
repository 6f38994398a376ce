"""The real stack for end-to-end tests: service and gateway as subprocesses.

Both run exactly as `make run` starts them (console entry points, a config
file, the environment), on free loopback ports, against a fake provider.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.ollama import FakeOllama
from tests.gateway_http import gateway_get
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
_SCRUBBED = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "IOS_APITOKEN", "AGENT_CONFIG")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Process:
    """A child process with its output in a log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        self.reap(timeout)

    def reap(self, timeout: float = 10.0) -> None:
        """Wait for the exit a signal asked for; killed after ``timeout``."""
        if self.popen is None:
            return
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Stack:
    """Service + gateway configured by ``config`` (nested like config.yaml)."""

    workdir: Path
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    service: Process | None = None
    gateway: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ollama_slots(self) -> int:
        """The Ollama slots of the configuration: every host's, or the one host's."""
        ollama = self.config.get("ollama", {})
        backends = ollama.get("backends") or [{"parallel": ollama.get("parallel", 1)}]
        return sum(int(b.get("parallel", 1)) for b in backends)

    @property
    def metrics_url(self) -> str:
        """The service's Prometheus endpoint."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _write_config(self) -> Path:
        base = {
            "grpc": {"address": self.grpc_address, "shutdown_grace_s": 5},
            "api_server": {
                "host": "127.0.0.1",
                "port": self.http_port,
                "workers": 1,
                "log_level": "warning",
                "data_dir": str(self.workdir),  # the gateway's metrics folder
            },
            "store": {"url": f"sqlite:///{self.workdir / 'agent.db'}"},
            "sse": {"keepalive_s": 15},
            "metrics": {"address": f"127.0.0.1:{self.metrics_port}"},
            # Position updates as often as the queue tests look for them (the default is 1 s).
            "queue": {"position_interval_s": 0.2},
        }
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(_merge(base, self.config)))
        return path

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = str(self._write_config())
        env = self._env()
        self.start_service(config, env)
        self.gateway = Process(
            "gateway",
            [sys.executable, "-m", "gateway.main", "--config", config],
            env,
            self.workdir / "gateway.log",
        )
        self.gateway.start()
        self.wait_service_ready()
        self._wait(self._gateway_ready, "gateway", self.gateway)
        return self

    def start_service(self, config: str | None = None, env: dict[str, str] | None = None) -> None:
        config = config or str(self.workdir / "config.yaml")
        self.service = Process(
            "service",
            [sys.executable, "-m", "service.main", "--config", config],
            env or self._env(),
            self.workdir / f"service-{time.monotonic_ns()}.log",
        )
        self.service.start()

    def wait_service_ready(self) -> None:
        assert self.service is not None
        self._wait(self._service_ready, "service", self.service)

    def _wait(self, ready: Any, what: str, proc: Process, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{what} exited early:\n{proc.log()}")
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{what} not ready in {timeout}s:\n{proc.log()}")

    def _service_ready(self) -> bool:
        with grpc.insecure_channel(self.grpc_address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=0.5
                )
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def _gateway_ready(self) -> bool:
        try:
            return gateway_get(f"{self.url}/health", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        for proc in (self.gateway, self.service):
            if proc is not None:
                proc.stop()

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event."""

    event: str
    data: dict[str, Any]
    id: int | None = None  # the frame's ``id:`` line, when it has one


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent | str]:
    """Events (and comment lines, as str) from the lines of an SSE body."""
    event, data = "message", []
    seq: int | None = None
    for line in lines:
        if line.startswith(":"):
            yield line
        elif line == "":
            if data:
                yield SseEvent(event, json.loads("\n".join(data)), seq)
            event, data, seq = "message", [], None
        elif line.startswith("id:"):
            seq = int(line[3:].strip())
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def stream_events(
    client: httpx.Client, url: str, body: dict[str, Any], **kw: Any
) -> list[SseEvent]:
    """POST and collect every event of the stream (comments dropped)."""
    with client.stream("POST", url, json=body, **kw) as response:
        assert response.status_code == 200, response.read()
        return [e for e in parse_sse(response.iter_lines()) if isinstance(e, SseEvent)]


ANTHROPIC_KEY = "sk-test-e2e"


def provider_config(provider: str, ollama: FakeOllama, anthropic: FakeAnthropic | None) -> dict:
    config: dict = {
        "api": {"provider": provider},
        "ollama": {"url": ollama.url, "model": "llama3.2"},
    }
    if anthropic is not None:
        config["anthropic"] = {
            "api_key": ANTHROPIC_KEY,
            "base_url": anthropic.url,
            "model": "claude-test",
            "max_retries": 0,
        }
    return config


def launch(tmp: Path, config: dict, env: dict[str, str] | None = None) -> Stack:
    stack = Stack(tmp, config, env or {})
    try:
        stack.start()
    except Exception:
        stack.stop()
        raise
    return stack
