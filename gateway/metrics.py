"""The gateway's Prometheus metrics and its ``GET /metrics``.

Several uvicorn workers serve one port, and a scrape reaches one of them, so
the figures must be the sum over workers. That is prometheus_client's
multiprocess mode: ``agent-gateway`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh private directory before the workers start (unless the operator set
it), every worker writes its values to memory-mapped files there, and
``/metrics`` in any worker adds them up with ``MultiProcessCollector``. The
gauge is ``livesum``: the open streams of live workers only; a dead worker's
files are dropped (``mark_process_dead``) at its shutdown, or by the next
scrape once its pid is gone, while its counters stay in the sums so they never
go backwards.

An app made in process without that variable (tests) keeps its metrics in a
registry of its own. Nothing is registered in prometheus_client's global
registry, so two apps in one process never collide.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds; long tails because a streamed turn is measured to its last event.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LIVE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


class GatewayMetrics:
    """The metrics of one app; exposition in single- or multi-process mode."""

    def __init__(self, multiproc_dir: str | None = None) -> None:
        # A *_created gauge beside every counter and histogram doubles the series for a
        # figure Prometheus does not use (the library's switch is process-wide).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "agent_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "agent_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer (a stream's last event).",
            ("route",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "agent_active_streams",
            "Server-Sent-Event chat streams open in the gateway now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    @classmethod
    def from_environment(cls) -> GatewayMetrics:
        return cls(os.environ.get(MULTIPROC_ENV) or None)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type."""
        if self.multiproc_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        reap_dead_workers(self.multiproc_dir)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """At this worker's shutdown: its live gauges stop counting."""
        if self.multiproc_dir is not None:
            mark_process_dead(os.getpid(), self.multiproc_dir)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_workers(path: str) -> None:
    """Drop the live gauges of workers that died without a shutdown (killed, crashed)."""
    pids = {
        int(m.group(1))
        for f in Path(path).iterdir()
        if (m := _LIVE_FILE.fullmatch(f.name)) is not None
    }
    for pid in pids:
        if not _alive(pid):
            mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
