"""agent-gateway's start: its metrics folder lives under api_server.data_dir, and the
folders that SIGKILLed gateways left there are removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway import main as gateway_main
from gateway.http_protocol import BODY_TIMEOUT_ENV, HEADER_TIMEOUT_ENV
from gateway.main import METRICS_DIR_PREFIX, MULTIPROC_ENV, remove_stale_metrics_dirs
from tests.ports import free_port


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # reaped: no process has this id now (pids are not reused at once)


def _folders(data_dir: Path) -> dict[str, Path]:
    """A metrics folder of a dead gateway, a live one, this process's pid, and others."""
    folders = {
        "stale": data_dir / f"{METRICS_DIR_PREFIX}{_dead_pid()}-abc",
        "live": data_dir / f"{METRICS_DIR_PREFIX}{os.getppid()}-def",
        # This pid, before this gateway made its folder: an earlier process's (pid 1 of a
        # container that was killed and started again).
        "same pid": data_dir / f"{METRICS_DIR_PREFIX}{os.getpid()}-ghi",
        "legacy": data_dir / f"{METRICS_DIR_PREFIX}xyz",  # no pid in the name: not ours to judge
        "other": data_dir / "something-else",
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "counter_1.db").write_bytes(b"x")
    return folders


def test_stale_metrics_folders_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    folders = _folders(tmp_path)
    removed = remove_stale_metrics_dirs(tmp_path)
    assert sorted(removed) == sorted([folders["stale"], folders["same pid"]])
    kept = {folders[name].name for name in ("live", "legacy", "other")}
    assert {p.name for p in tmp_path.iterdir()} == kept


def _own_environment(monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    """What main() sets in the environment, set first so that the test's end restores it."""
    monkeypatch.setenv(MULTIPROC_ENV, "")  # empty: main makes its own folder
    monkeypatch.setenv("AGENT_CONFIG", str(config))
    monkeypatch.setenv(HEADER_TIMEOUT_ENV, "10")
    monkeypatch.setenv(BODY_TIMEOUT_ENV, "30")


def test_main_makes_its_metrics_folder_under_the_data_dir_after_clearing_stale_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "gateway-data"
    folders = _folders(data_dir)
    config = tmp_path / "config.yaml"
    config.write_text(f"api_server:\n  port: {free_port()}\n  data_dir: {data_dir}\n")
    _own_environment(monkeypatch, config)
    seen: dict[str, Any] = {}

    def run(*args: Any, **kw: Any) -> None:  # uvicorn's place: what the workers would find
        seen["dir"] = Path(os.environ[MULTIPROC_ENV])
        seen["then"] = {p.name for p in data_dir.iterdir()}

    monkeypatch.setattr(uvicorn, "run", run)
    gateway_main.main(["--config", str(config)])
    own = seen["dir"]
    assert own.parent == data_dir and own.name.startswith(f"{METRICS_DIR_PREFIX}{os.getpid()}-")
    kept = {folders[name].name for name in ("live", "legacy", "other")}
    assert seen["then"] == kept | {own.name}  # stale ones gone before the workers start
    assert {p.name for p in data_dir.iterdir()} == kept  # its own removed when it exits


def test_a_data_dir_that_cannot_be_made_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = tmp_path / "config.yaml"
    config.write_text(f"api_server:\n  port: {free_port()}\n  data_dir: {blocker / 'data'}\n")
    _own_environment(monkeypatch, config)
    with pytest.raises(SystemExit) as ended:
        gateway_main.main(["--config", str(config)])
    assert ended.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("agent-gateway: cannot make the metrics folder under api_server.")
