"""A PostgreSQL cluster of a test's own, in a temp folder: the outage tests stop and restart it.

Never the shared server: stopping that would fail every other test running
at the time. The server binaries come from ``/usr/lib/postgresql/<version>/bin``;
``initdb`` and ``pg_ctl`` refuse to run as root, so when the tests run as root
they run as the ``postgres`` user (through ``runuser``) on a folder it owns.
Unix sockets are off: the cluster listens on a free port of 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_SYSTEM_USER = "postgres"


def server_binaries() -> Path | None:
    """The newest installed server's bin folder, or None."""
    found = sorted(glob.glob(_BIN_GLOB), key=lambda p: _version_key(Path(p).parent.name))
    for folder in reversed(found):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


class PrivateCluster:
    """initdb'd once; ``start``/``stop`` as often as a test needs, always on the same port."""

    def __init__(self, binaries: Path, root: Path) -> None:
        self.binaries = binaries
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        self.up = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.binaries / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", _SYSTEM_USER, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=60)

    def init(self) -> None:
        self.data.mkdir()
        if self._as_root:
            user = pwd.getpwnam(_SYSTEM_USER)
            # The postgres user must reach the folder (a temp dir is 0700) and own the data.
            self.root.chmod(0o755)
            os.chown(self.data, user.pw_uid, user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N"
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"
            " -c fsync=off -c max_connections=40"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.data / "log"),
            "-w",
            "start",
        )
        self.up = True

    def stop(self, mode: str = "fast") -> None:
        """Stop and wait until it is down ("fast" ends sessions; "immediate" is a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.up = False

    def psql(self, sql: str) -> str:
        """One statement through ``psql``: blocking, so it cannot let an event loop run."""
        result = subprocess.run(
            [
                str(self.binaries / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return result.stdout.strip()

    def terminate_sessions(self, application_name: str) -> int:
        """``pg_terminate_backend`` every session of the application; waits until they are gone.

        The application may connect again at once: only the sessions killed are waited for.
        """
        pids = self.psql(
            "SELECT string_agg(pid::text, ',') FROM pg_stat_activity"
            f" WHERE application_name = '{application_name}'"
        )
        if not pids:
            return 0
        self.psql(f"SELECT pg_terminate_backend(pid) FROM unnest(ARRAY[{pids}]) AS pid")
        deadline = time.monotonic() + 10
        alive = f"SELECT count(*) FROM pg_stat_activity WHERE pid IN ({pids})"
        while self.psql(alive) != "0":
            if time.monotonic() > deadline:
                raise TimeoutError(f"sessions {pids} of {application_name} still alive")
            time.sleep(0.02)
        return len(pids.split(","))


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started private cluster, stopped and removed afterwards; skips without the binaries."""
    binaries = server_binaries()
    if binaries is None:
        pytest.skip(f"PostgreSQL server binaries not found ({_BIN_GLOB}/initdb, pg_ctl)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root and runuser is missing: initdb cannot run as root")
    root = Path(tempfile.mkdtemp(prefix="agent-pg-"))
    cluster = PrivateCluster(binaries, root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
