"""history.summarize in the running service (gRPC, the Ollama host pool, shutdown).

A summary held open upstream neither holds a turn back nor the shutdown: the
service stops it at once instead of waiting out the grace period for it.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from service.config import Settings
from service.prompt import SUMMARY_OPEN
from service.server import running_service
from service.summaries import SUMMARY_USER
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.fakes.server import RecordedRequest

INSTRUCTION = "Summarize this conversation for the test."


def is_summary(request: RecordedRequest) -> bool:
    messages = request.json.get("messages") or [{}]  # health checks have no body
    return bool(messages[0] == {"role": "system", "content": INSTRUCTION})


async def test_a_held_summary_holds_back_neither_turns_nor_the_shutdown(tmp_path: Path) -> None:
    gate = threading.Event()  # never opened: the summary stays in flight upstream
    async with FakeOllama() as fake:

        def respond(request: RecordedRequest) -> Reply:
            if is_summary(request):
                return Reply.text("never", gate=gate, gate_after=0)
            return fake.echo(request)

        fake.responder = respond
        settings = Settings(
            grpc={"address": "127.0.0.1:0", "shutdown_grace_s": 30},
            metrics={"address": ""},
            store={"url": f"sqlite:///{tmp_path / 'agent.db'}"},
            api={"provider": "ollama", "history_budget_tokens": 600, "history_watermark": 0.5},
            ollama={"url": fake.url, "parallel": 2},
            history={"summarize": True, "summary_max_tokens": 64, "summary_prompt": INSTRUCTION},
        )
        lifespan = running_service(settings)
        service = await lifespan.__aenter__()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                conversation = ""
                for number in range(30):
                    reply = await stub.Chat(
                        pb.ChatRequest(
                            message=f"question {number} " + "words " * 12,
                            user_id="alice",
                            conversation_id=conversation,
                        )
                    )
                    conversation = reply.conversation_id
                    if service.chat.summaries.running:
                        break
                assert await fake.wait_until(lambda: any(is_summary(c) for c in fake.chats))
                [held] = await service.scheduler.requests(SUMMARY_USER)
                assert held.state == "running" and held.backend == fake.url  # a host's slot

                # The next turn runs beside it, with the plain cut.
                await stub.Chat(
                    pb.ChatRequest(
                        message="and now?", user_id="alice", conversation_id=conversation
                    )
                )
                last = [c for c in fake.chats if not is_summary(c)][-1]
                assert SUMMARY_OPEN not in last.json["messages"][1]["content"]
        finally:
            stopping = asyncio.create_task(lifespan.__aexit__(None, None, None))
            async with asyncio.timeout(15):  # well inside the 30 s grace period
                await stopping
        index = next(i for i, c in enumerate(fake.requests) if is_summary(c))
        assert await fake.disconnected(index)
