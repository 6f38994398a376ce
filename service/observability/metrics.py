"""The service's Prometheus metrics: one registry per service, never a module global.

Counters and histograms are updated where things happen (the call
interceptor, the chat turn, the scheduler's hand-off); the queue gauges are
read from the scheduler's statistics at scrape time by a collector, so they
cost nothing between scrapes and can never drift from the queue itself.

Label values are bounded: method names, status codes, provider and model
names from the configuration, host URLs from the configuration, limit names.
Never a user id or a request id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.content import Usage
from service.errors import (
    DeadlineExceeded,
    LimitReached,
    ProviderError,
    QueueFull,
    ServiceUnavailable,
)
from service.events import ChatEvent
from service.providers.base import TextDelta
from service.scheduler import QueueStats

Send = Callable[[ChatEvent], Awaitable[None]]

# Seconds: from a few milliseconds (a fast local model) to minutes (a long queue).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServiceMetrics:
    """Every metric the service exports, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.grpc_handled = Counter(
            "agent_grpc_server_handled_total",
            "RPCs completed, by method and gRPC status code.",
            ["method", "code"],
            registry=r,
        )
        self.grpc_seconds = Histogram(
            "agent_grpc_server_handling_seconds",
            "Time from the start of an RPC to its end (whole stream for streaming RPCs).",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "agent_queue_wait_seconds",
            "Time requests waited for a provider slot (those that got one).",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_rejected = Counter(
            "agent_queue_rejected_total",
            "Requests refused at admission by a queue cap or because the service was closing.",
            ["provider", "reason"],
            registry=r,
        )
        self.turn_seconds = Histogram(
            "agent_turn_duration_seconds",
            "Chat turns from admission to the stored answer, whatever their outcome.",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "agent_time_to_first_token_seconds",
            "From admission to the first text the model produced (queue wait included).",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "agent_tokens_total",
            # The label keeps its first name (dashboards use it); it names the kind.
            "Tokens as the providers report them, by kind: input (uncached), output,"
            " cache_read and cache_creation (prompt-cache input).",
            ["provider", "model", "direction"],
            registry=r,
        )
        self.provider_errors = Counter(
            "agent_provider_errors_total",
            "Failed model calls, by kind (the ErrorInfo reason, lower case).",
            ["provider", "kind"],
            registry=r,
        )
        self.limit_rejections = Counter(
            "agent_limit_rejections_total",
            "Requests refused by a per-user limit, by the limit's name.",
            ["limit"],
            registry=r,
        )
        self._active_streams = 0
        self.registry.register(_ActiveStreams(lambda: self._active_streams))

    # --- what a chat turn reports ----------------------------------------------

    def refused(self, provider: str, error: BaseException) -> None:
        """A request refused at admission (a per-user limit, a queue cap, shutdown)."""
        if isinstance(error, LimitReached):
            self.limit_rejections.labels(error.limit or "unknown").inc()
        elif isinstance(error, QueueFull):
            self.queue_rejected.labels(provider, error.cap or "queue_full").inc()
        elif isinstance(error, ServiceUnavailable):
            self.queue_rejected.labels(provider, "shutting_down").inc()

    def got_slot(self, provider: str, waited_s: float) -> None:
        self.queue_wait.labels(provider).observe(max(waited_s, 0.0))

    def spent(self, provider: str, model: str, usage: Usage) -> None:
        if usage.input_tokens:
            self.tokens.labels(provider, model, "input").inc(usage.input_tokens)
        if usage.output_tokens:
            self.tokens.labels(provider, model, "output").inc(usage.output_tokens)
        if usage.cache_read_input_tokens:
            self.tokens.labels(provider, model, "cache_read").inc(usage.cache_read_input_tokens)
        if usage.cache_creation_input_tokens:
            self.tokens.labels(provider, model, "cache_creation").inc(
                usage.cache_creation_input_tokens
            )

    def provider_failed(self, provider: str, error: BaseException) -> None:
        if isinstance(error, ProviderError):
            kind = error.reason.value.lower() if error.reason else error.code.value.lower()
            self.provider_errors.labels(provider, kind).inc()
        elif isinstance(error, DeadlineExceeded):
            self.provider_errors.labels(provider, "deadline_exceeded").inc()

    def timed(self, provider: str, send: Send) -> TurnTimer:
        """Times one turn from now: its first text (through ``send``) and its end."""
        return TurnTimer(self, provider, send)

    def stream_opened(self) -> None:
        self._active_streams += 1

    def stream_closed(self) -> None:
        self._active_streams -= 1

    def watch_queue(self, stats: Callable[[], QueueStats]) -> None:
        """Export the queue gauges, read from ``stats`` at each scrape."""
        self.registry.register(_QueueCollector(stats))


class TurnTimer:
    """One turn's clock: wraps its ``send`` to see the first text, and ends with ``done``."""

    __slots__ = ("_first", "_metrics", "_provider", "_send", "_started")

    def __init__(self, metrics: ServiceMetrics, provider: str, send: Send) -> None:
        self._metrics = metrics
        self._provider = provider
        self._send = send
        self._started = time.perf_counter()
        self._first = True

    async def send(self, event: ChatEvent) -> None:
        if self._first and isinstance(event, TextDelta):
            self._first = False
            elapsed = time.perf_counter() - self._started
            self._metrics.first_token.labels(self._provider).observe(elapsed)
        await self._send(event)

    def done(self) -> None:
        elapsed = time.perf_counter() - self._started
        self._metrics.turn_seconds.labels(self._provider).observe(elapsed)


class _ActiveStreams(Collector):
    def __init__(self, value: Callable[[], int]) -> None:
        self._value = value

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "agent_active_streams", "ChatStream RPCs open in the service.", value=self._value()
        )


class _QueueCollector(Collector):
    """The scheduler's state as gauges, computed when scraped."""

    def __init__(self, stats: Callable[[], QueueStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        waiting = GaugeMetricFamily(
            "agent_queue_waiting",
            "Requests waiting for a slot (or for their conversation), by original priority.",
            labels=["provider", "priority"],
        )
        running = GaugeMetricFamily(
            "agent_queue_running", "Requests holding a provider slot.", labels=["provider"]
        )
        slots = GaugeMetricFamily(
            "agent_queue_slots",
            "Provider slots, by backend (a pool host's URL, or the provider's name).",
            labels=["provider", "backend"],
        )
        up = GaugeMetricFamily(
            "agent_backend_up",
            "1 while a pool host passes its health checks, 0 while it is marked down.",
            labels=["backend"],
        )
        for name, lane in stats.providers.items():
            for priority in range(1, 11):
                waiting.add_metric([name, str(priority)], lane.waiting_by_priority.get(priority, 0))
            running.add_metric([name], lane.running)
            if lane.hosts:
                for host in lane.hosts:
                    slots.add_metric([name, host.name], host.slots)
                    up.add_metric([host.name], 1.0 if host.up else 0.0)
            else:
                slots.add_metric([name, name], lane.slots)
        yield from (waiting, running, slots, up)


class MetricsEndpoint:
    """``GET /metrics`` on its own port, served by a small asyncio server in the service's loop.

    The loop, not prometheus_client's server thread: it starts and stops with the
    service's lifespan (nothing to join at shutdown), and a scrape only reads
    plain numbers. One request per connection; anything but ``GET /metrics`` is 404.
    """

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._registry = metrics.registry
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._server = await asyncio.start_server(
            self._serve, host.strip("[]") or "127.0.0.1", int(port)
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = [*head.split(b" ", 2), b"", b""]
            if method == b"GET" and path.split(b"?", 1)[0] == b"/metrics":
                status, kind, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
            else:
                status, kind, body = "404 Not Found", "text/plain", b"only GET /metrics here\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that sends nothing useful just loses its connection
        finally:
            writer.close()
