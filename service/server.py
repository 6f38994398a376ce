"""Builds the service from settings and runs it: the lifespan of every resource.

Shutdown (uvicorn's shape): stop admitting, end waiting requests with
UNAVAILABLE, give running ones ``grpc.shutdown_grace_s`` to finish, cancel
what is left, store interrupted turns, then close providers and the store.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import grpc
from agent.v1 import agent_pb2, agent_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.agent import AgentLoop
from service.auth import Authenticator, load_tokens_file
from service.chat import ChatService
from service.config import Settings
from service.profiles import ProfileDirectory
from service.providers.base import Provider
from service.providers.factory import build_provider
from service.rpc.interceptor import CallInterceptor
from service.rpc.servicer import AgentServicer
from service.scheduler import Scheduler
from service.status import ProviderProbes
from service.store.factory import open_store
from service.streams import StreamingTurns
from service.tools import default_registry

log = logging.getLogger(__name__)

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
_SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
]


@dataclass(slots=True)
class RunningService:
    """What a caller of ``running_service`` may need: the port and the parts."""

    port: int
    server: grpc.aio.Server
    scheduler: Scheduler
    chat: ChatService
    health: health.aio.HealthServicer


def build_providers(settings: Settings) -> dict[str, Provider]:
    """The default provider, plus Anthropic whenever a key is configured."""
    names = {settings.provider, "ollama"}
    if settings.anthropic.api_key:
        names.add("anthropic")
    timeouts = settings.providers
    return {
        name: build_provider(
            name,
            ollama_url=settings.ollama.url,
            ollama_model=settings.ollama.model,
            ollama_max_connections=settings.ollama.parallel + 4,
            anthropic_api_key=settings.anthropic.api_key,
            anthropic_base_url=settings.anthropic.base_url or None,
            anthropic_model=settings.anthropic.model,
            anthropic_max_retries=settings.anthropic.max_retries,
            first_byte_timeout_s=timeouts.first_byte_timeout_s,
            idle_timeout_s=timeouts.idle_timeout_s,
        )
        for name in sorted(names)
    }


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[RunningService]:
    """Start the gRPC server with every resource; shut all down gracefully on exit."""
    async with AsyncExitStack() as stack:
        store = open_store(settings.store.resolved_url())
        await store.open()
        stack.push_async_callback(store.close)

        providers = build_providers(settings)
        for provider in providers.values():
            stack.push_async_callback(provider.aclose)

        user_tokens = (
            load_tokens_file(settings.auth.tokens_file) if settings.auth.tokens_file else {}
        )
        auth = Authenticator(
            shared_token=settings.auth.shared_token,
            user_tokens=user_tokens,
            default_user=settings.auth.default_user,
        )
        scheduler = Scheduler(
            slots={
                "ollama": settings.ollama.parallel,
                "anthropic": settings.anthropic.max_concurrency,
            },
            max_pending=settings.queue.max_pending,
            max_pending_per_user=settings.queue.max_pending_per_user,
            aging_interval_s=settings.queue.aging_interval_s,
            retention_s=settings.queue.retention_s,
        )
        chat = ChatService(
            settings,
            providers=providers,
            default_provider=settings.provider,
            store=store,
            scheduler=scheduler,
            profiles=ProfileDirectory(settings.profiles.directory),
            agent=AgentLoop(
                default_registry(settings.tools.extra, settings.tools.timeout_s),
                max_rounds=settings.api.max_tool_rounds,
            ),
        )
        streams = StreamingTurns(chat, scheduler, store, settings.stream)
        servicer = AgentServicer(
            auth=auth,
            chat=chat,
            streams=streams,
            scheduler=scheduler,
            store=store,
            probes=ProviderProbes(providers),
            default_provider=settings.provider,
            default_model=providers[settings.provider].model,
        )

        server = grpc.aio.server(
            options=_SERVER_OPTIONS,
            interceptors=[CallInterceptor(auth, prefix=f"/{SERVICE_NAME}/")],
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
        port = server.add_insecure_port(settings.grpc.address)
        if port == 0:
            raise OSError(f"cannot listen on {settings.grpc.address}")
        await server.start()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "agent service listening on %s (provider %s, model %s)",
            settings.grpc.address,
            settings.provider,
            providers[settings.provider].model,
        )
        try:
            yield RunningService(port, server, scheduler, chat, health_servicer)
        finally:
            await _shutdown(settings, server, scheduler, chat, health_servicer)
            await streams.close()


async def _shutdown(
    settings: Settings,
    server: grpc.aio.Server,
    scheduler: Scheduler,
    chat: ChatService,
    health_servicer: health.aio.HealthServicer,
) -> None:
    grace = settings.grpc.shutdown_grace_s
    log.info("shutting down: finishing running requests (grace %.0f s)", grace)
    await health_servicer.enter_graceful_shutdown()
    scheduler.begin_shutdown("the service is shutting down; retry shortly")
    drained = await scheduler.drain(grace)
    if not drained:
        stopped = chat.interrupt_running("the service shut down before this request finished")
        log.warning("grace period over: stopped %d running request(s)", stopped)
        drained = await scheduler.drain(2.0)  # their streams get the error and the store write
    # Running RPCs have finished; stop() cancels anything left.
    await server.stop(grace=1.0 if drained else 0.1)
    await chat.wait_persisted()
    log.info("shutdown complete")
