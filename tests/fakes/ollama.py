"""FakeOllama: a loopback Ollama server speaking /api/chat NDJSON, scriptable per test.

Also runnable as a DEMO backend that echoes what it is sent:

    python -m tests.fakes.ollama --host 127.0.0.1 --port 11434 --delay 0.02
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from tests.fakes.prompt_cache import OllamaSlots, prompt_tokens
from tests.fakes.script import Frame, Reply, play
from tests.fakes.scripted import ScriptedFake
from tests.fakes.server import Exchange

_STATUS_MESSAGES = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    413: "request entity too large",
    429: "too many requests",
    500: "internal server error",
    503: "server busy, please try again.  maximum pending requests exceeded",
}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _canonical(model: str) -> str:
    return model if ":" in model else f"{model}:latest"


def last_user_text(body: dict[str, Any]) -> str:
    """The content of the last user (or tool) message of an /api/chat body."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") in ("user", "tool"):
            return str(message.get("content", ""))
    return ""


class FakeOllama(ScriptedFake):
    """A fake Ollama: /api/chat (streamed or not), /api/version, /api/tags, /api/show, /.

    ``models`` are the installed models (a chat for another one gets 404);
    None accepts any model. Unscripted chats echo the last user message.
    ``/api/ps`` lists ``loaded``: as on a real server, a model is loaded by the
    first chat that uses it (tests may also set it). Stopping the fake drops
    every open connection (a host that dies mid-stream); ``start`` again serves
    on the same port (the host comes back). ``parallel`` slots each keep the
    KV cache of their last prompt (see ``prompt_cache``): unless a reply
    scripts ``input_tokens``, ``prompt_eval_count`` counts only the tokens
    after the part the slot's previous prompt shares with this one.
    """

    chat_path = "/api/chat"

    def __init__(
        self,
        *,
        models: Iterable[str] | None = ("llama3.2:latest",),
        version: str = "0.12.6",
        chunk_delay_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        parallel: int = 1,
    ) -> None:
        super().__init__(chunk_delay_s=chunk_delay_s, host=host, port=port)
        self.slots = OllamaSlots(parallel)
        self.models = None if models is None else [_canonical(m) for m in models]
        self.version = version
        self.loaded: list[str] = []

    def last_user_text(self, body: dict[str, Any]) -> str:
        return last_user_text(body)

    def knows(self, model: str) -> bool:
        return self.models is None or _canonical(model) in self.models

    # --- routes ----------------------------------------------------------------

    async def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        route = (request.method, request.path)
        if route in (("GET", "/"), ("HEAD", "/")):
            exchange.respond(200, b"Ollama is running", "text/plain; charset=utf-8")
        elif route == ("GET", "/api/version"):
            exchange.respond_json(200, {"version": self.version})
        elif route == ("GET", "/api/tags"):
            listed = self.models if self.models is not None else ["llama3.2:latest"]
            exchange.respond_json(200, {"models": [self._model_entry(m) for m in listed]})
        elif route == ("GET", "/api/ps"):
            exchange.respond_json(200, {"models": [self._model_entry(m) for m in self.loaded]})
        elif route == ("POST", "/api/show"):
            self._show(exchange)
        elif route == ("POST", "/api/chat"):
            with self.flight():
                await self._chat(exchange)
        else:
            exchange.respond(404, b"404 page not found", "text/plain")

    def _model_entry(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": _now(),
            "size": 2019393189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": {
                "format": "gguf",
                "family": "llama",
                "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M",
            },
        }

    def _show(self, exchange: Exchange) -> None:
        model = str(exchange.request.json.get("model") or "")
        if not self.knows(model):
            exchange.respond_json(404, {"error": f"model '{model}' not found"})
            return
        exchange.respond_json(
            200,
            {
                "modelfile": "# fake",
                "details": self._model_entry(model)["details"],
                "capabilities": ["completion", "tools"],
            },
        )

    async def _chat(self, exchange: Exchange) -> None:
        body = exchange.request.json
        model = str(body.get("model") or "")
        if not model:
            exchange.respond_json(400, {"error": "model is required"})
            return
        if not self.knows(model):
            exchange.respond_json(404, {"error": f"model '{model}' not found"})
            return
        if _canonical(model) not in self.loaded:
            self.loaded.append(_canonical(model))
        reply = self.script.next_reply(exchange.request)
        if reply.status >= 400:
            if reply.initial_delay_s and not await exchange.pause(reply.initial_delay_s):
                return
            default = _STATUS_MESSAGES.get(reply.status, "error")
            if reply.status == 404:
                default = f"model '{model}' not found"
            message = reply.error_message or default
            exchange.respond_json(reply.status, {"error": message}, dict(reply.headers))
            return
        slot, evaluated = self.slots.take(prompt_tokens(body))
        if reply.input_tokens is not None:
            evaluated = reply.input_tokens
        try:
            if body.get("stream") is False:
                if reply.initial_delay_s and not await exchange.pause(reply.initial_delay_s):
                    return
                whole = self._whole(model, reply, evaluated)
                exchange.respond_json(200, whole, dict(reply.headers))
                return
            await play(
                exchange,
                reply,
                self._frames(model, reply, evaluated),
                content_type="application/x-ndjson",
                error_frame=lambda: _line({"error": reply.fail_message}),
            )
        finally:
            self.slots.release(slot)

    # --- wire format -------------------------------------------------------------

    def _tool_calls(self, reply: Reply) -> list[dict[str, Any]]:
        calls = []
        for index, call in enumerate(reply.tool_calls):
            function: dict[str, Any] = {"name": call.name, "arguments": call.arguments}
            entry: dict[str, Any] = {"function": function}
            if call.id is not None:  # newer servers send id and index; older ones neither
                entry["id"] = call.id
                function["index"] = index
            calls.append(entry)
        return calls

    def _done(self, model: str, reply: Reply, evaluated: int) -> dict[str, Any]:
        eval_tokens = reply.output_tokens
        if eval_tokens is None:
            eval_tokens = len(reply.chunks) + len(reply.tool_calls)
        return {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": reply.stop_reason or "stop",
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_count": evaluated,
            "prompt_eval_duration": 342546000,
            "eval_count": eval_tokens,
            "eval_duration": 4535599000,
        }

    def _frames(self, model: str, reply: Reply, evaluated: int) -> list[Frame]:
        frames = [
            Frame(
                _line(
                    {
                        "model": model,
                        "created_at": _now(),
                        "message": {"role": "assistant", "content": chunk},
                        "done": False,
                    }
                ),
                "chunk",
            )
            for chunk in reply.chunks
        ]
        if reply.tool_calls:
            message = {"role": "assistant", "content": "", "tool_calls": self._tool_calls(reply)}
            frames.append(
                Frame(
                    _line(
                        {"model": model, "created_at": _now(), "message": message, "done": False}
                    ),
                    "tail",
                )
            )
        frames.append(Frame(_line(self._done(model, reply, evaluated)), "tail"))
        return frames

    def _whole(self, model: str, reply: Reply, evaluated: int) -> dict[str, Any]:
        whole = self._done(model, reply, evaluated)
        whole["message"] = {"role": "assistant", "content": reply.text_content}
        if reply.tool_calls:
            whole["message"]["tool_calls"] = self._tool_calls(reply)
        return whole


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="DEMO fake Ollama backend (echoes messages).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between chunks")
    args = parser.parse_args(argv)
    fake = FakeOllama(models=None, chunk_delay_s=args.delay, host=args.host, port=args.port)
    with fake:
        print(
            f"DEMO fake Ollama backend on {fake.url}: not a real model, it echoes your messages."
            " Ctrl-C to stop.",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping the demo backend", flush=True)


if __name__ == "__main__":
    main()
