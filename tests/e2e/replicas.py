"""Several service replicas on one PostgreSQL queue, and one gateway balancing over them.

Each replica is a real ``service.main`` process with the same configuration
file and its own ``grpc.address``, ``metrics.address`` and replica id (from
the environment, as an operator would run them); the gateway's
``grpc.address`` lists all of them. The store and the queue live in a schema
of their own in the test database, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import yaml
from agent.v1 import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.stack import _SCRUBBED, Process, _merge, free_port
from tests.fakes.ollama import FakeOllama
from tests.gateway_http import gateway_get

POSTGRES_URL = os.environ.get("AGENT_TEST_POSTGRES_URL", "")
# scheduler.lease_s of these stacks: short, so a killed or frozen replica is noticed soon,
# yet long enough for a live one on a loaded machine, whose event loop (which runs the
# heartbeat) can be busy for a second or more while the other tests of a parallel run
# compete for the CPU.
LEASE_S = 5.0


def replicas_config(a: FakeOllama, b: FakeOllama, **extra: Any) -> dict[str, Any]:
    """Two Ollama hosts of one slot each, room in the queue; ``extra`` sections replace."""
    config: dict[str, Any] = {
        "api": {"provider": "ollama"},
        "ollama": {
            "model": "llama3.2",
            "backends": [{"url": a.url, "parallel": 1}, {"url": b.url, "parallel": 1}],
        },
        "queue": {"max_pending": 200, "max_pending_per_user": 50},
    }
    config.update(extra)
    return config


@dataclass
class Replica:
    name: str
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def stub(self, channel: grpc.Channel) -> agent_pb2_grpc.AgentServiceStub:
        return agent_pb2_grpc.AgentServiceStub(channel)

    def serving(self) -> bool:
        with self.channel() as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=0.5
                )
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def turns_run(self) -> float:
        """Turns this replica ran to a model call (its own metrics)."""
        metrics = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = httpx.get(metrics, timeout=5).text  # not the gateway: the service's metrics
        found = re.findall(r"^agent_turn_duration_seconds_count\{[^}]*\} ([0-9.e+]+)$", text, re.M)
        return sum(float(n) for n in found)


@dataclass
class Replicas:
    """N replicas + one gateway on one PostgreSQL database (a schema of its own)."""

    workdir: Path
    config: dict[str, Any]
    count: int = 3
    schema: str = field(default_factory=lambda: f"e2e_{secrets.token_hex(4)}")
    database_url: str = POSTGRES_URL  # a private cluster's, for a test that restarts it
    http_port: int = field(default_factory=free_port)
    replicas: list[Replica] = field(default_factory=list)
    gateway: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def store_url(self) -> str:
        joiner = "&" if "?" in self.database_url else "?"
        return f"{self.database_url}{joiner}schema={self.schema}"

    def start(self) -> Replicas:
        """Start every replica and the gateway; on any failure, stop what did start."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Replicas:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.replicas = [Replica(f"r{i}") for i in range(self.count)]
        base = {
            "grpc": {
                "address": ",".join(r.address for r in self.replicas),
                "shutdown_grace_s": 5,
            },
            "api_server": {
                "host": "127.0.0.1",
                "port": self.http_port,
                "workers": 1,
                "data_dir": str(self.workdir),
            },
            "store": {"url": self.store_url},
            "scheduler": {"backend": "postgres", "lease_s": LEASE_S},
            "sse": {"keepalive_s": 15},
        }
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(_merge(base, self.config)))
        for replica in self.replicas:
            self.start_replica(replica)
        for replica in self.replicas:
            self.wait(replica.serving, f"replica {replica.name}", replica.process)
        self.gateway = Process(
            "gateway",
            [sys.executable, "-m", "gateway.main", "--config", str(path)],
            self._env(),
            self.workdir / "gateway.log",
        )
        self.gateway.start()
        self.wait(self._gateway_ready, "gateway", self.gateway)
        return self

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        env.update(extra or {})
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_replica(self, replica: Replica) -> None:
        env = self._env(
            {
                "AGENT_GRPC__ADDRESS": replica.address,
                "AGENT_METRICS__ADDRESS": f"127.0.0.1:{replica.metrics_port}",
                "AGENT_SCHEDULER__REPLICA_ID": replica.name,
            }
        )
        replica.process = Process(
            replica.name,
            [sys.executable, "-m", "service.main", "--config", str(self.workdir / "config.yaml")],
            env,
            self.workdir / f"{replica.name}-{time.monotonic_ns()}.log",
        )
        replica.process.start()

    def restart(self, replica: Replica) -> None:
        self.start_replica(replica)
        self.wait(replica.serving, f"replica {replica.name}", replica.process)

    def signal(self, replica: Replica, sig: int) -> None:
        assert replica.process is not None
        replica.process.signal(sig)

    def kill(self, replica: Replica) -> None:
        self.signal(replica, signal.SIGKILL)
        assert replica.process is not None
        replica.process.wait(10)

    def wait(self, ready: Callable[[], bool], what: str, proc: Process | None) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{what} exited early:\n{proc.log()}")
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{what} not ready in 30 s:\n{proc.log() if proc else ''}")

    def _gateway_ready(self) -> bool:
        try:
            return gateway_get(f"{self.url}/health", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """The gateway, then every replica at once: each may wait out its grace period."""
        if self.gateway is not None:
            self.gateway.stop()
        procs = [r.process for r in self.replicas if r.process is not None]
        for proc in procs:
            if proc.alive():
                proc.signal(signal.SIGCONT)  # a frozen one must hear SIGTERM
                proc.signal(signal.SIGTERM)
        for proc in procs:
            proc.reap()
        self._drop_schema()

    def _drop_schema(self) -> None:
        """Drop the stack's schema from the shared test database (best effort: a private
        cluster a test stopped is gone with its schema anyway)."""

        async def drop() -> None:
            conn = await asyncpg.connect(self.database_url, timeout=10)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await conn.close()

        def run() -> None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                asyncio.run(drop())

        # Its own thread: stop() may be called from a test that runs an event loop.
        worker = threading.Thread(target=run, name="drop-schema")
        worker.start()
        worker.join(30)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}"
            for p in sorted(self.workdir.glob("*.log"))
        )
