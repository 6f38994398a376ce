"""agent-gateway's start: the metrics folders that SIGKILLed gateways left behind are removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.main import METRICS_DIR_PREFIX, remove_stale_metrics_dirs


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # reaped: no process has this id now (pids are not reused at once)


def test_stale_metrics_folders_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    stale = tmp_path / f"{METRICS_DIR_PREFIX}{_dead_pid()}-abc"
    live = tmp_path / f"{METRICS_DIR_PREFIX}{os.getpid()}-def"
    legacy = tmp_path / f"{METRICS_DIR_PREFIX}xyz"  # no pid in the name: not ours to judge
    other = tmp_path / "something-else"
    for folder in (stale, live, legacy, other):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"x")
    assert remove_stale_metrics_dirs(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, legacy, other)
    )
