"""Builds the service from settings and runs it: the lifespan of every resource.

Shutdown (uvicorn's shape): stop admitting, end waiting requests with
UNAVAILABLE (with the shared queue, only this replica's), give running ones
``grpc.shutdown_grace_s`` to finish, cancel what is left, store interrupted
turns, then close the scheduler, providers and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import grpc
from agent.v1 import agent_pb2, agent_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.agent import AgentLoop
from service.auth import Authenticator
from service.chat import ChatService
from service.config import Settings
from service.idp import JwtVerifier
from service.limits import Limits
from service.limits.rate_port import SharedRate
from service.listen import add_port, check_address_free
from service.observability.metrics import MetricsEndpoint, ServiceMetrics
from service.observability.tracing import Tracing, tracing_from_environment
from service.pool import CircuitBreaker, HealthMonitor, HostPool, Probe
from service.profiles import ProfileDirectory
from service.providers.base import HostInventory, Provider
from service.providers.factory import build_provider
from service.providers.ollama import OllamaBridge
from service.revocation import Revocations
from service.rpc.forward import ReplicaForwarder
from service.rpc.interceptor import CallInterceptor
from service.rpc.servicer import AgentServicer
from service.scheduler import Host, Scheduler
from service.scheduler.estimates import QueueStats
from service.scheduler.interface import RequestScheduler
from service.scheduler.memory import MemoryScheduler
from service.scheduler.postgres import PostgresScheduler
from service.status import ProviderProbes, startup_probe
from service.store.factory import open_store, postgres_target
from service.store.watch import StoreWatch, publish_to
from service.streams import StreamingTurns
from service.tools import default_registry

if TYPE_CHECKING:
    from service.tools.mcp_registry import McpTools

log = logging.getLogger(__name__)

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
# Request messages: the gateway's body limit (api_server.max_body_bytes) plus room for
# the envelope, the same figure the gateway sends at most. Replies may be larger
# (a whole conversation); the gateway receives up to this.
_REQUEST_SLACK_BYTES = 64 * 1024
_MAX_REPLY_BYTES = 32 * 1024 * 1024
_STATS_REFRESH_S = 2.0  # how old the shared queue's gauges may be at a scrape
_PENDING_CALLS = 100_000  # calls gRPC holds for the event loop before it cancels any
_PENDING_S = 3600
# Request metadata (headers) per call. gRPC's defaults are 8 KiB soft, past which it
# refuses a growing share of calls at random, and 16 KiB hard: a long bearer token got
# RESOURCE_EXHAUSTED from the transport, or not, before the interceptor could say why.
# One bounded limit for both makes it deterministic; auth.jwt.max_token_bytes (8 KiB)
# refuses an oversize token before it is parsed, naming the check. A request message
# may already be larger (api_server.max_body_bytes plus slack), so this adds no new
# order of memory per call.
MAX_METADATA_BYTES = 256 * 1024


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Options of the gRPC server; the receive limit matches the gateway's send limit."""
    return [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        (
            "grpc.max_receive_message_length",
            settings.api_server.max_body_bytes + _REQUEST_SLACK_BYTES,
        ),
        ("grpc.max_send_message_length", _MAX_REPLY_BYTES),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        # A second service on a used port must fail, not share it (see service/listen.py).
        ("grpc.so_reuseport", 0),
        # Connections that never complete the handshake, or that sit idle, are shed.
        ("grpc.server_handshake_timeout_ms", _ms(settings.grpc.handshake_timeout_s)),
        ("grpc.max_connection_idle_ms", _ms(settings.grpc.idle_timeout_s)),
        # Calls that arrived but that the event loop has not picked up yet: gRPC cancels
        # them past 1,000 (3,000 hard) by default, which a burst of thousands of streams
        # opened at once reaches; they cost only memory while they wait.
        ("grpc.server.max_pending_requests", _PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", _PENDING_CALLS),
        # ...and past 30 s of waiting for it (seconds; the request's own deadline still holds).
        ("grpc.server_max_unrequested_time_in_server", _PENDING_S),
    ]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


@dataclass(slots=True)
class RunningService:
    """What a caller of ``running_service`` may need: the port and the parts."""

    port: int
    server: grpc.aio.Server
    scheduler: RequestScheduler
    chat: ChatService
    health: health.aio.HealthServicer
    # Probes the default provider once after start and warns if it cannot answer.
    probe: asyncio.Task[None] | None = None
    metrics: ServiceMetrics | None = None
    metrics_port: int | None = None  # None: metrics.address is empty (off)


def build_ollama_hosts(settings: Settings) -> dict[str, Provider]:
    """One Ollama bridge per configured host (``ollama.backends``, or the one ``ollama.url``)."""
    timeouts = settings.providers
    return {
        host.url: build_provider(
            "ollama",
            ollama_url=host.url,
            ollama_model=settings.ollama.model,
            ollama_max_connections=host.parallel + 4,
            first_byte_timeout_s=timeouts.first_byte_timeout_s,
            idle_timeout_s=timeouts.idle_timeout_s,
        )
        for host in settings.ollama.hosts()
    }


def build_providers(
    settings: Settings, ollama_hosts: Mapping[str, Provider] | None = None
) -> dict[str, Provider]:
    """The default provider, plus Anthropic whenever a key is configured.

    With ``ollama_hosts``, "ollama" is the first host's bridge (what GetStatus probes);
    the turns themselves run on the bridge of the host the scheduler gave them.
    """
    names = {settings.provider, "ollama"}
    if settings.anthropic.api_key:
        names.add("anthropic")
    timeouts = settings.providers
    first = next(iter(ollama_hosts.values())) if ollama_hosts else None
    return {
        name: first
        if name == "ollama" and first is not None
        else build_provider(
            name,
            ollama_url=settings.ollama.url,
            ollama_model=settings.ollama.model,
            ollama_max_connections=settings.ollama.parallel + 4,
            anthropic_api_key=settings.anthropic.api_key,
            anthropic_base_url=settings.anthropic.base_url or None,
            anthropic_model=settings.anthropic.model,
            anthropic_max_retries=settings.anthropic.max_retries,
            anthropic_prompt_caching=settings.anthropic.prompt_caching,
            first_byte_timeout_s=timeouts.first_byte_timeout_s,
            idle_timeout_s=timeouts.idle_timeout_s,
        )
        for name in sorted(names)
    }


@asynccontextmanager
async def running_service(
    settings: Settings, *, tracing: Tracing | None = None
) -> AsyncIterator[RunningService]:
    """Start the gRPC server with every resource; shut all down gracefully on exit.

    ``tracing`` (tests inject one with an in-memory exporter) defaults to what
    the environment asks for (``OTEL_EXPORTER_OTLP_ENDPOINT``).
    """
    # Before any resource is opened: a taken port is the most common first-run mistake.
    check_address_free(settings.grpc.address)
    tracing = tracing or tracing_from_environment()
    metrics = ServiceMetrics()
    async with AsyncExitStack() as stack:
        store = open_store(settings.store.resolved_url())
        await store.open()
        stack.push_async_callback(store.close)

        ollama_hosts = build_ollama_hosts(settings)
        providers = build_providers(settings, ollama_hosts)
        for provider in {id(p): p for p in [*ollama_hosts.values(), *providers.values()]}.values():
            stack.push_async_callback(provider.aclose)

        jwt = settings.auth.jwt
        auth = Authenticator(
            shared_token=settings.auth.shared_token,
            users_file=settings.auth.tokens_file,
            default_user=settings.auth.default_user,
            known_tiers=settings.limits.tiers,
            reload_interval_s=settings.auth.reload_interval_s,
            jwt=JwtVerifier.from_section(jwt, known_tiers=settings.limits.tiers)
            if jwt.enabled
            else None,
        )
        stack.push_async_callback(auth.aclose)
        await auth.start()  # fetches the JWT key set; an unreachable issuer only warns
        scheduler, queue_stats = await build_scheduler(settings, stack, providers=set(providers))
        limits = Limits(
            settings.limits, store, tier_of=auth.tier_of, rate=await shared_rate(settings, stack)
        )
        breaker = CircuitBreaker(
            scheduler,
            "ollama",
            trip_after=settings.ollama.breaker_failures,
            open_s=settings.ollama.breaker_open_s,
        )
        tools = default_registry(settings.tools.extra, settings.tools.timeout_s)
        mcp: McpTools | None = None
        if settings.tools.mcp_servers:
            # Imported here: the MCP SDK takes ~0.6 s of CPU to import, which a service
            # without MCP servers should not spend at every start.
            from service.tools.mcp_registry import McpTools

            mcp = McpTools(
                tools,
                settings.tools.mcp_servers,
                default_timeout_s=settings.tools.timeout_s,
                retry_initial_s=settings.tools.mcp_retry_initial_s,
                retry_max_s=settings.tools.mcp_retry_max_s,
            )
            # Connected before the first request, so the first turn sees the tools;
            # stopped (stdio servers exit) after the last turn has finished.
            stack.push_async_callback(mcp.stop)
            await mcp.start()

        chat = ChatService(
            settings,
            providers=providers,
            default_provider=settings.provider,
            store=store,
            scheduler=scheduler,
            profiles=ProfileDirectory(settings.profiles.directory),
            agent=AgentLoop(tools, max_rounds=settings.api.max_tool_rounds, tracing=tracing),
            limits=limits,
            pools={
                "ollama": HostPool(
                    scheduler,
                    "ollama",
                    ollama_hosts,
                    retry_after_s=max(1.0, settings.ollama.health_interval_s),
                    breaker=breaker,
                )
            },
            metrics=metrics,
            tracing=tracing,
            still_valid=auth.still_valid,
        )
        monitor = HealthMonitor(
            scheduler,
            provider="ollama",
            probe=_inventory_probe(ollama_hosts),
            interval_s=settings.ollama.health_interval_s,
            unhealthy_after=settings.ollama.unhealthy_after,
            learn_models=[h.url for h in settings.ollama.hosts() if not h.models],
            breaker=breaker,
        )
        # A first round before serving, so admission knows the models the hosts have.
        await monitor.check()
        health_checks = asyncio.create_task(monitor.run(), name="ollama-health")
        stack.push_async_callback(_stop, health_checks)
        # A revoked token's waiting requests are cancelled, even when nobody calls.
        auth.on_revoked(Revocations(scheduler).revoked)
        users_file = asyncio.create_task(auth.watch_file(), name="users-file")
        stack.push_async_callback(_stop, users_file)
        shared = scheduler if isinstance(scheduler, PostgresScheduler) else None
        # With replicas, a re-attach that lands here for a request another one runs is
        # relayed to it.
        forwarder = ReplicaForwarder() if shared is not None else None
        if forwarder is not None:
            stack.push_async_callback(forwarder.close)
        streams = StreamingTurns(
            chat,
            scheduler,
            store,
            settings.stream,
            replica=shared.replica_id if shared is not None else "",
        )
        servicer = AgentServicer(
            auth=auth,
            chat=chat,
            streams=streams,
            scheduler=scheduler,
            store=store,
            probes=ProviderProbes(providers),
            limits=limits,
            default_provider=settings.provider,
            default_model=providers[settings.provider].model,
            mcp=mcp,
            metrics=metrics,
            forwarder=forwarder,
        )
        metrics.watch_queue(queue_stats)
        metrics_port = None
        if settings.metrics.address:
            endpoint = MetricsEndpoint(metrics)
            await endpoint.start(settings.metrics.address)
            stack.push_async_callback(endpoint.close)
            metrics_port = endpoint.port
            host = settings.metrics.address.rpartition(":")[0]
            log.info("metrics on http://%s:%d/metrics", host, metrics_port)

        server = grpc.aio.server(
            options=server_options(settings),
            interceptors=[
                CallInterceptor(auth, prefix=f"/{SERVICE_NAME}/", metrics=metrics, tracing=tracing)
            ],
        )
        agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        port = add_port(server, settings.grpc.address)
        await server.start()
        if shared is not None:
            # Where other replicas forward watches of requests running here; then take
            # over, now and then, the waiting requests of replicas that went away.
            await shared.publish_address(advertised_address(settings.grpc.address, port))
            adoption = asyncio.create_task(streams.adopt_forever(), name="adopt")
            stack.push_async_callback(_stop, adoption)
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        # The store's own health entry (readiness reports a database outage from it).
        store_watch = StoreWatch(store, publish_to(health_servicer)).run()
        stack.push_async_callback(_stop, asyncio.create_task(store_watch, name="store-health"))
        log.info(
            "agent service listening on %s (provider %s, model %s)",
            settings.grpc.address,
            settings.provider,
            providers[settings.provider].model,
        )
        # In the background: a missing Ollama must not delay a service that may never need it.
        probe = asyncio.create_task(
            startup_probe(settings.provider, providers[settings.provider]),
            name="startup-probe",
        )
        try:
            yield RunningService(
                port, server, scheduler, chat, health_servicer, probe, metrics, metrics_port
            )
        finally:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
            await _shutdown(settings, server, scheduler, chat, health_servicer)
            await streams.close()


async def shared_rate(settings: Settings, stack: AsyncExitStack) -> SharedRate | None:
    """With the shared queue, requests_per_minute is counted in its database too, so it
    holds across replicas; None: this process's buckets."""
    if settings.scheduler.backend != "postgres":
        return None
    target = postgres_target(settings.store.resolved_url())
    assert target is not None  # the configuration check made sure
    rate = SharedRate(target[0], schema=target[1])
    await rate.open()
    stack.push_async_callback(rate.close)
    return rate


def advertised_address(listen: str, port: int) -> str:
    """Where the other replicas reach this one: the listening address, a wildcard host
    replaced by this machine's name, with the port actually bound."""
    host = listen.rpartition(":")[0]
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"


async def build_scheduler(
    settings: Settings, stack: AsyncExitStack, *, providers: Collection[str] = ("anthropic",)
) -> tuple[RequestScheduler, Callable[[], QueueStats]]:
    """The configured scheduler (``scheduler.backend``) and a sync view of its statistics.

    The metrics read the queue at each scrape, synchronously: the in-process engine
    answers at once; the shared queue's figures come from a snapshot refreshed by a
    small task (a scrape must not wait on the database).
    """
    common = {
        # A provider that is not configured has no lane: no slots, no series, no status row.
        "slots": {"anthropic": settings.anthropic.max_concurrency}
        if "anthropic" in providers
        else {},
        "hosts": {"ollama": ollama_pool(settings)},
        "down_retry_s": settings.ollama.health_interval_s,
        "max_pending": settings.queue.max_pending,
        "max_pending_per_user": settings.queue.max_pending_per_user,
        "aging_interval_s": settings.queue.aging_interval_s,
        "retention_s": settings.queue.retention_s,
    }
    if settings.scheduler.backend == "memory":
        engine = Scheduler(**common)  # type: ignore[arg-type]
        return MemoryScheduler(engine), engine.stats
    target = postgres_target(settings.store.resolved_url())
    assert target is not None  # the configuration check made sure
    dsn, schema = target
    shared = PostgresScheduler(
        dsn,
        schema=schema,
        replica_id=settings.scheduler.resolved_replica_id(),
        lease_s=settings.scheduler.lease_s,
        **common,  # type: ignore[arg-type]
    )
    await shared.open()
    stack.push_async_callback(shared.close)
    latest = [await shared.stats()]

    async def refresh() -> None:
        while True:
            await asyncio.sleep(_STATS_REFRESH_S)
            try:
                latest[0] = await shared.stats()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("queue statistics not refreshed: %s", exc)

    task = asyncio.create_task(refresh(), name="queue-stats")
    stack.push_async_callback(_stop, task)
    log.info("request queue shared through PostgreSQL as replica %s", shared.replica_id)
    return shared, lambda: latest[0]


def ollama_pool(settings: Settings) -> list[Host]:
    """The scheduler's view of the Ollama hosts: slots and, where configured, models."""
    return [
        Host(h.url, h.parallel, models=frozenset(h.models) if h.models else None)
        for h in settings.ollama.hosts()
    ]


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _inventory_probe(bridges: Mapping[str, Provider]) -> Probe:
    async def probe(host: str, installed: bool) -> HostInventory:
        bridge = bridges[host]
        assert isinstance(bridge, OllamaBridge)
        return await bridge.inventory(installed=installed)

    return probe


async def _shutdown(
    settings: Settings,
    server: grpc.aio.Server,
    scheduler: RequestScheduler,
    chat: ChatService,
    health_servicer: health.aio.HealthServicer,
) -> None:
    grace = settings.grpc.shutdown_grace_s
    log.info("shutting down: finishing running requests (grace %.0f s)", grace)
    await health_servicer.enter_graceful_shutdown()
    await scheduler.begin_shutdown("the service is shutting down; retry shortly")
    # Background summaries (history.summarize) give their slots back at once.
    await chat.summaries.close()
    drained = await scheduler.drain(grace)
    if not drained:
        stopped = chat.interrupt_running("the service shut down before this request finished")
        log.warning("grace period over: stopped %d running request(s)", stopped)
        drained = await scheduler.drain(2.0)  # their streams get the error and the store write
    # Running RPCs have finished; stop() cancels anything left.
    await server.stop(grace=1.0 if drained else 0.1)
    await chat.wait_persisted()
    log.info("shutdown complete")
