"""Starting the service: a taken port is one line and a non-zero exit; an unusable default
provider is a WARNING naming the URL and the ways out, without delaying the start."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings
from service.server import running_service
from tests.fakes.ollama import FakeOllama
from tests.ports import free_port

BIN = Path(sys.executable).parent


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other process listens on, with SO_REUSEPORT as a gRPC server sets it."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_second_service_on_a_used_port_exits_with_one_line(
    tmp_path: Path, taken_port: int
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "ANTHROPIC_"))}
    env.update(
        AGENT_GRPC__ADDRESS=f"127.0.0.1:{taken_port}",
        AGENT_STORE__DATA_DIR=str(tmp_path / "data"),
        AGENT_OLLAMA__URL=f"http://127.0.0.1:{free_port()}",
    )
    proc = subprocess.run(
        [str(BIN / "agent-service")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=10,  # a service that starts instead of failing is the defect
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert f"127.0.0.1:{taken_port}" in lines[0]
    assert "address already in use" in lines[0]
    assert not (tmp_path / "data").exists()  # nothing was opened before the port check


def _settings(tmp_path: Path, ollama_url: str) -> Settings:
    return Settings(
        grpc={"address": "127.0.0.1:0"},
        metrics={"address": "127.0.0.1:0"},
        store={"data_dir": tmp_path},
        ollama={"url": ollama_url},
        api={"provider": "ollama"},
    )


async def test_an_unreachable_default_provider_is_a_warning_with_the_ways_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.INFO, logger="service")
    async with running_service(_settings(tmp_path, url)) as service:
        assert service.probe is not None
        await service.probe
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(url in w and "ollama serve" in w and "ANTHROPIC_API_KEY" in w for w in warnings)
    assert any("make demo" in w for w in warnings)


async def test_a_reachable_default_provider_gives_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service")
    with FakeOllama() as fake:
        async with running_service(_settings(tmp_path, fake.url)) as service:
            assert service.probe is not None
            await service.probe
    assert not [
        r for r in caplog.records if r.name == "service.status" and r.levelno >= logging.WARNING
    ]


def test_a_service_without_mcp_servers_does_not_load_the_mcp_sdk(tmp_path: Path) -> None:
    # The SDK takes ~0.6 s of CPU to import: a third of a service's start, for nothing.
    check = (
        "import asyncio, sys\n"
        "from service.server import running_service\n"
        "from tests.test_startup import _settings\n"
        "async def main(folder, url):\n"
        "    async with running_service(_settings(folder, url)):\n"
        "        pass\n"
        "asyncio.run(main(*sys.argv[1:]))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mcp'))\n"
    )
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-c", check, str(tmp_path), url],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
