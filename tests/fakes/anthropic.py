"""FakeAnthropic: a loopback Anthropic Messages API (SSE streaming), scriptable per test."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from tests.fakes.prompt_cache import AnthropicPromptCache, CacheUsage
from tests.fakes.script import Frame, Reply, play
from tests.fakes.scripted import ScriptedFake
from tests.fakes.server import Exchange, RecordedRequest

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

_STATUS_MESSAGES = {
    400: "invalid request",
    401: "invalid x-api-key",
    403: "your API key does not have permission to use the specified resource",
    413: "request exceeds the maximum allowed number of bytes",
    429: "Number of request tokens has exceeded your rate limit",
    500: "Internal server error",
    529: "Overloaded",
}


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content", "")))
    return "".join(parts)


def last_user_text(body: dict[str, Any]) -> str:
    """The text (or tool result) of the last user message of a /v1/messages body."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic(ScriptedFake):
    """A fake Anthropic API: /v1/messages (SSE or JSON), count_tokens, /v1/models/{id}.

    ``api_key`` is the key to expect in ``x-api-key`` or ``Authorization: Bearer``
    (None: any non-empty key). ``models`` None accepts any model name.
    Unscripted calls echo the last user message. ``cache`` is its prompt cache
    (see ``prompt_cache``): unless a reply scripts ``input_tokens``, the usage
    of a call is split into uncached, cache-written and cache-read input.
    """

    chat_path = "/v1/messages"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: Iterable[str] | None = None,
        chunk_delay_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(chunk_delay_s=chunk_delay_s, host=host, port=port)
        self.cache = AnthropicPromptCache()
        self.api_key = api_key
        self.models = None if models is None else set(models)

    def last_user_text(self, body: dict[str, Any]) -> str:
        return last_user_text(body)

    def knows(self, model: str) -> bool:
        return self.models is None or model in self.models

    # --- routes ----------------------------------------------------------------

    async def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        if not self._authorized(request):
            exchange.respond_json(401, error_body("authentication_error", "invalid x-api-key"))
            return
        route = (request.method, request.path)
        if route == ("POST", "/v1/messages"):
            with self.flight():
                await self._messages(exchange)
        elif route == ("POST", "/v1/messages/count_tokens"):
            exchange.respond_json(200, {"input_tokens": self._input_tokens(request.json)})
        elif request.method == "GET" and request.path.startswith("/v1/models/"):
            model = request.path.removeprefix("/v1/models/")
            if not self.knows(model):
                exchange.respond_json(404, error_body("not_found_error", f"model: {model}"))
                return
            exchange.respond_json(
                200,
                {
                    "type": "model",
                    "id": model,
                    "display_name": model,
                    "created_at": "2025-01-01T00:00:00Z",
                },
            )
        else:
            exchange.respond_json(404, error_body("not_found_error", "Not found"))

    def _authorized(self, request: RecordedRequest) -> bool:
        key = request.headers.get("x-api-key", "")
        bearer = request.headers.get("authorization", "")
        if not key and bearer.lower().startswith("bearer "):
            key = bearer[7:].strip()
        return bool(key) and (self.api_key is None or key == self.api_key)

    def _input_tokens(self, body: dict[str, Any]) -> int:
        words = len(str(body.get("system", "")).split())
        for message in body.get("messages") or []:
            words += len(_text_of(message.get("content")).split())
        return max(1, words)

    async def _messages(self, exchange: Exchange) -> None:
        body = exchange.request.json
        model = str(body.get("model") or "")
        for required in ("model", "max_tokens", "messages"):
            if required not in body:
                exchange.respond_json(
                    400, error_body("invalid_request_error", f"{required}: Field required")
                )
                return
        if not self.knows(model):
            exchange.respond_json(404, error_body("not_found_error", f"model: {model}"))
            return
        reply = self.script.next_reply(exchange.request)
        if reply.status >= 400:
            if reply.initial_delay_s and not await exchange.pause(reply.initial_delay_s):
                return
            error_type = reply.error_type or ERROR_TYPES.get(reply.status, "api_error")
            default = _STATUS_MESSAGES.get(reply.status, "error")
            if reply.status == 404:
                default = f"model: {model}"
            message = reply.error_message or default
            headers = {"request-id": "req_fake", **reply.headers}
            exchange.respond_json(reply.status, error_body(error_type, message), headers)
            return
        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        if not body.get("stream"):
            if reply.initial_delay_s and not await exchange.pause(reply.initial_delay_s):
                return
            exchange.respond_json(
                200, self._whole(message_id, model, reply, body), dict(reply.headers)
            )
            return
        await play(
            exchange,
            reply,
            self._frames(message_id, model, reply, body),
            content_type="text/event-stream; charset=utf-8",
            error_frame=lambda: _sse("error", error_body(reply.fail_type, reply.fail_message)),
        )

    # --- wire format -------------------------------------------------------------

    def _usage(self, reply: Reply, body: dict[str, Any]) -> tuple[CacheUsage, int]:
        if reply.input_tokens is None:
            cached = self.cache.account(body)
        else:
            cached = CacheUsage(reply.input_tokens, 0, 0)
        output_tokens = reply.output_tokens
        if output_tokens is None:
            output_tokens = len(reply.chunks) + 5 * len(reply.tool_calls)
        return cached, output_tokens

    @staticmethod
    def _usage_fields(cached: CacheUsage, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": cached.input_tokens,
            "cache_creation_input_tokens": cached.cache_creation_input_tokens,
            "cache_read_input_tokens": cached.cache_read_input_tokens,
            "output_tokens": output_tokens,
        }

    def _stop_reason(self, reply: Reply) -> str:
        return reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")

    def _tool_ids(self, reply: Reply) -> list[str]:
        return [call.id or f"toolu_{uuid.uuid4().hex[:24]}" for call in reply.tool_calls]

    def _frames(
        self, message_id: str, model: str, reply: Reply, body: dict[str, Any]
    ) -> list[Frame]:
        cached, output_tokens = self._usage(reply, body)
        start = {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": self._usage_fields(cached, 1),
            },
        }
        frames = [
            Frame(_sse("message_start", start), "head"),
            Frame(_sse("ping", {"type": "ping"}), "head"),
        ]
        index = 0
        if reply.chunks:
            frames.append(
                Frame(
                    _sse(
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": 0,
                            "content_block": {"type": "text", "text": ""},
                        },
                    ),
                    "head",
                )
            )
            for number, chunk in enumerate(reply.chunks):
                delta = {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": chunk},
                }
                frames.append(Frame(_sse("content_block_delta", delta), "chunk"))
                if number == 1:
                    frames.append(Frame(_sse("ping", {"type": "ping"}), "tail"))
            frames.append(
                Frame(
                    _sse("content_block_stop", {"type": "content_block_stop", "index": 0}), "tail"
                )
            )
            index = 1
        for call, call_id in zip(reply.tool_calls, self._tool_ids(reply), strict=True):
            block = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
            frames.append(
                Frame(
                    _sse(
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": block,
                        },
                    ),
                    "tail",
                )
            )
            encoded = json.dumps(call.arguments)
            third = max(1, len(encoded) // 3)
            pieces = ["", encoded[:third], encoded[third : 2 * third], encoded[2 * third :]]
            for piece in pieces:
                delta = {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
                frames.append(Frame(_sse("content_block_delta", delta), "tail"))
            frames.append(
                Frame(
                    _sse("content_block_stop", {"type": "content_block_stop", "index": index}),
                    "tail",
                )
            )
            index += 1
        frames.append(
            Frame(
                _sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": self._stop_reason(reply), "stop_sequence": None},
                        "usage": self._usage_fields(cached, output_tokens),
                    },
                ),
                "tail",
            )
        )
        frames.append(Frame(_sse("message_stop", {"type": "message_stop"}), "tail"))
        return frames

    def _whole(
        self, message_id: str, model: str, reply: Reply, body: dict[str, Any]
    ) -> dict[str, Any]:
        cached, output_tokens = self._usage(reply, body)
        content: list[dict[str, Any]] = []
        if reply.chunks:
            content.append({"type": "text", "text": reply.text_content})
        for call, call_id in zip(reply.tool_calls, self._tool_ids(reply), strict=True):
            content.append(
                {"type": "tool_use", "id": call_id, "name": call.name, "input": call.arguments}
            )
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "content": content,
            "model": model,
            "stop_reason": self._stop_reason(reply),
            "stop_sequence": None,
            "usage": self._usage_fields(cached, output_tokens),
        }
