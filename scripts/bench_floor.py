"""The architecture's floor, for `make bench`: a bare grpc.aio echo and a bare FastAPI route.

Two processes, run the way the real ones are (the echo like the service, the
route under one uvicorn worker like the gateway), doing nothing but the
hops themselves:

- ``grpc``: a grpc.aio server whose AgentService/Chat answers at once with
  the request's message (no auth, no queue, no store, no provider);
- ``http``: a FastAPI app with ``POST /api/chat`` taking the same request
  body as the gateway's, calling that echo over one grpc.aio channel and
  answering with the same response shape.

For streams waiting their turn (``bench_waiting.py``), the echo's ChatStream
sends one ``queued`` event and holds the stream open until the client goes,
and the route ``POST /api/chat/stream`` relays it as Server-Sent Events with a
Starlette StreamingResponse: what one open waiting stream costs on these hops
with no code of ours.

What the real stack costs above these two is what its own code costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "generated"))

import grpc  # noqa: E402
from agent.v1 import agent_pb2 as pb  # noqa: E402
from agent.v1 import agent_pb2_grpc  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402


class Echo(agent_pb2_grpc.AgentServiceServicer):
    async def Chat(self, request: pb.ChatRequest, context: Any) -> pb.ChatResponse:
        return pb.ChatResponse(
            response=request.message,
            conversation_id=request.conversation_id or "c_floor",
            request_id=request.request_id or "r_floor",
            provider="floor",
            model="echo",
            stop_reason="end_turn",
        )

    async def ChatStream(self, request: pb.ChatStreamRequest, context: Any) -> Any:
        yield pb.ChatStreamResponse(
            seq=1, queued=pb.QueuedEvent(request_id=request.request_id, position=1)
        )
        await asyncio.Event().wait()  # waits for its turn until the client goes away


async def serve_grpc(port: int) -> None:
    # The service's limits on calls not picked up yet (gRPC's defaults cancel a burst
    # of thousands): settings, not code, so the floor has them too.
    server = grpc.aio.server(
        options=[
            ("grpc.server.max_pending_requests", 100_000),
            ("grpc.server.max_pending_requests_hard_limit", 100_000),
            ("grpc.server_max_unrequested_time_in_server", 3600),
        ]
    )
    agent_pb2_grpc.add_AgentServiceServicer_to_server(Echo(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


class Body(BaseModel):
    """The gateway's chat request body, in the same shape."""

    message: str = Field(min_length=1)
    conversation_id: str | None = None
    user_id: str | None = None
    priority: int = Field(5, ge=1, le=10)
    new_conversation: bool = False
    request_id: str | None = None


def http_app(grpc_address: str) -> Any:
    channel: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        channel["c"] = grpc.aio.insecure_channel(grpc_address)
        channel["stub"] = agent_pb2_grpc.AgentServiceStub(channel["c"])  # type: ignore[no-untyped-call]
        yield
        await channel["c"].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/api/chat")
    async def chat(body: Body) -> dict[str, Any]:
        reply = await channel["stub"].Chat(
            pb.ChatRequest(
                message=body.message,
                conversation_id=body.conversation_id or "",
                user_id=body.user_id or "",
                priority=body.priority,
                new_conversation=body.new_conversation,
                request_id=body.request_id or "",
            ),
            timeout=30,
        )
        return {
            "response": reply.response,
            "conversation_id": reply.conversation_id,
            "request_id": reply.request_id,
            "usage": {"input_tokens": 0, "output_tokens": 0},
            "provider": reply.provider,
            "model": reply.model,
            "stop_reason": reply.stop_reason,
            "tool_calls": [],
        }

    @app.post("/api/chat/stream")
    async def chat_stream(body: Body) -> Any:
        from google.protobuf.json_format import MessageToDict
        from starlette.responses import StreamingResponse

        call = channel["stub"].ChatStream(
            pb.ChatStreamRequest(message=body.message, user_id=body.user_id or "")
        )

        async def frames() -> Any:
            try:
                async for event in call:
                    kind = event.WhichOneof("event")
                    data = json.dumps(MessageToDict(getattr(event, kind)), separators=(",", ":"))
                    yield f"id: {event.seq}\nevent: {kind}\ndata: {data}\n\n".encode()
            finally:
                call.cancel()

        return StreamingResponse(frames(), media_type="text/event-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["grpc", "http"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc", default="", help="the echo's address (http only)")
    args = parser.parse_args()
    if args.kind == "grpc":
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve_grpc(args.port))
        else:
            uvloop.run(serve_grpc(args.port))
        return
    import uvicorn

    uvicorn.run(
        http_app(args.grpc),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        loop="auto",
        http="auto",
    )


if __name__ == "__main__":
    main()


# --- the load generator's side -------------------------------------------------


class FloorClients:
    """Senders for the floor processes, shaped like the stack's (bench_tools.Clients)."""

    def __init__(self, grpc_address: str, http_url: str, connections: int) -> None:
        import httpx
        from bench_tools import RawHttp, chat_body

        self.channel = grpc.aio.insecure_channel(grpc_address)
        self.stub = agent_pb2_grpc.AgentServiceStub(self.channel)  # type: ignore[no-untyped-call]
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.http = httpx.AsyncClient(base_url=http_url, limits=limits, timeout=60)
        self._raw = RawHttp.for_url(http_url, "/api/chat", connections)
        self._connections = connections
        self._requests = [self._raw.request(chat_body("hi", f"bench-{u}")) for u in range(32)]

    async def grpc_chat(self, i: int) -> None:
        reply = await self.stub.Chat(
            pb.ChatRequest(message="hi", user_id=f"bench-{i % 32}", new_conversation=True),
            timeout=30,
        )
        if not reply.response:
            raise RuntimeError("empty echo")

    async def http_chat(self, i: int) -> None:
        r = await self.http.post("/api/chat", json={"message": "hi", "user_id": f"bench-{i % 32}"})
        if r.status_code != 200:
            raise RuntimeError(f"floor route answered {r.status_code}")

    async def lean_http_chat(self, i: int) -> None:
        status, body = await self._raw.post(i % self._connections, self._requests[i % 32])
        if status != 200 or b'"response"' not in body:
            raise RuntimeError(f"floor route answered {status}")

    async def aclose(self) -> None:
        await self._raw.aclose()
        await self.http.aclose()
        await self.channel.close()
