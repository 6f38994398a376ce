"""What an operator gets wrong at start is one line on stderr and exit code 2, never a traceback.

Each case starts the real command (``python -m service.main`` /
``gateway.main``) as a process, the way an operator does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.ports import free_port

POSTGRES = os.environ.get("AGENT_TEST_POSTGRES_URL", "")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on (plain listener, SO_REUSEADDR as servers set it)."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _run(module: str, tmp_path: Path, *args: str, **env: str) -> tuple[int, list[str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "ANTHROPIC_"))}
    base.update(
        AGENT_GRPC__ADDRESS="127.0.0.1:0",
        AGENT_METRICS__ADDRESS="",
        AGENT_STORE__DATA_DIR=str(tmp_path / "data"),
        AGENT_OLLAMA__URL=f"http://127.0.0.1:{free_port()}",
    )
    base.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=base,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,  # a process that starts instead of failing is the defect
    )
    return proc.returncode, proc.stderr.strip().splitlines()


def _one_line(code: int, lines: list[str], *expected: str) -> str:
    assert code == 2 and len(lines) == 1, (code, lines)
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_a_taken_metrics_port(tmp_path: Path, taken_port: int) -> None:
    address = f"127.0.0.1:{taken_port}"
    code, lines = _run("service.main", tmp_path, AGENT_METRICS__ADDRESS=address)
    _one_line(code, lines, address, "address already in use", "metrics.address")


def test_a_taken_grpc_port_is_exit_2_too(tmp_path: Path, taken_port: int) -> None:
    address = f"127.0.0.1:{taken_port}"
    code, lines = _run("service.main", tmp_path, AGENT_GRPC__ADDRESS=address)
    _one_line(code, lines, address, "address already in use", "grpc.address")


def test_a_taken_gateway_port_names_the_address(tmp_path: Path, taken_port: int) -> None:
    code, lines = _run(
        "gateway.main",
        tmp_path,
        AGENT_API_SERVER__HOST="127.0.0.1",
        AGENT_API_SERVER__PORT=str(taken_port),
    )
    _one_line(code, lines, f"127.0.0.1:{taken_port}", "address already in use", "api_server.port")


@pytest.mark.parametrize("args", [(), ("--check-config",)], ids=["start", "check-config"])
def test_a_store_url_of_an_unknown_kind(tmp_path: Path, args: tuple[str, ...]) -> None:
    code, lines = _run("service.main", tmp_path, *args, AGENT_STORE__URL="mysql://u@h/db")
    _one_line(code, lines, "store.url", "'mysql'", "sqlite:///", "postgresql://")


def _with(url: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES, reason="AGENT_TEST_POSTGRES_URL is not set")
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"user": "no_such_role_x"}, 'role "no_such_role_x" does not exist'),
        ({"database": "no_such_db_x"}, 'database "no_such_db_x" does not exist'),
    ],
    ids=["role", "database"],
)
def test_a_postgres_store_that_refuses(
    tmp_path: Path, change: dict[str, str], expected: str
) -> None:
    url = _with(POSTGRES, **change)
    code, lines = _run("service.main", tmp_path, AGENT_STORE__URL=url)
    _one_line(code, lines, "cannot open the store", expected)


@pytest.mark.parametrize("backend", ["memory", "postgres"], ids=["own-queue", "shared-queue"])
def test_a_database_that_nobody_answers_is_one_line_and_exit_2(
    tmp_path: Path, backend: str
) -> None:
    # Nothing listens on the port (no PostgreSQL needed): the store, and the shared
    # queue in the same database, cannot be opened at start.
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    code, lines = _run(
        "service.main", tmp_path, AGENT_STORE__URL=url, AGENT_SCHEDULER__BACKEND=backend
    )
    _one_line(code, lines, "cannot open the store", "refused")
