"""Loopback ports for the servers tests start: outside the kernel's ephemeral range.

Binding port 0 and closing the socket finds a port that is free *now*, but it is
a port of the ephemeral range, the one the kernel hands to every outgoing
connection: a parallel test's connection to PostgreSQL or to a fake may be
given it before the child process binds it, and the child then exits with
"address already in use" (CI saw exactly that once). So ports come from below
the ephemeral range instead, where the kernel never picks on its own, each
pytest-xdist worker from a slice of its own, handed out in turn from a random
start and checked by a bind before use.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

_FLOOR = 15000  # below: ports other software on the machine likes to use
_MIN_POOL = 2000


def _ephemeral() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _pool() -> range | None:
    """The ports outside the ephemeral range, or None when there is no room for them."""
    low, high = _ephemeral()
    if low - _FLOOR >= _MIN_POOL:
        return range(_FLOOR, low)
    if 65535 - high >= _MIN_POOL:
        return range(high + 1, 65536)
    return None


def _slice(pool: range) -> range:
    """This xdist worker's share of the pool (the whole pool outside xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = len(pool) // max(count, 1)
    start = pool.start + (index % max(count, 1)) * size
    return range(start, start + size)


class _Ports:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._range: range | None = None
        self._next = 0

    def take(self) -> int:
        with self._lock:
            if self._range is None:
                pool = _pool()
                if pool is None:
                    return _any_port()
                self._range = _slice(pool)
                self._next = random.randrange(len(self._range))
            for _ in range(len(self._range)):
                port = self._range[self._next % len(self._range)]
                self._next += 1
                if _bindable(port):
                    return port
        raise RuntimeError(f"no free port in {self._range}")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_ports = _Ports()


def free_port() -> int:
    """A loopback port nothing listens on, and that no outgoing connection will be given."""
    return _ports.take()
