"""OllamaBridge: the Provider over Ollama's /api/chat (NDJSON streaming, httpx2).

No retries here: Ollama is local and a failed call is reported at once, so
the scheduler decides (the 503 "server busy" carries a retry hint).
Closing the HTTP response is how a running generation is stopped: Ollama
cancels a request whose client went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import httpx2

from service.content import Message, TextBlock, ToolResultBlock, ToolUseBlock, Usage
from service.errors import AgentError, ProviderError
from service.providers.base import (
    CompletionRequest,
    HostInventory,
    ProviderEvent,
    ProviderHealth,
    Stop,
    StopReason,
    TextDelta,
    ToolCall,
)
from service.providers.errors import (
    Upstream,
    bad_payload,
    connect_failure,
    first_byte_timeout,
    from_status,
    idle_timeout,
    mid_stream_failure,
    next_in_time,
    stream_broken,
)

log = logging.getLogger(__name__)

# After the done line only the end of the body is left; reading it keeps the
# connection reusable, but never wait long for it.
_DRAIN_S = 1.0


def chat_messages(request: CompletionRequest) -> list[dict[str, Any]]:
    """Our messages in Ollama's format: a leading system message, tool results as role "tool"."""
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    tool_names: dict[str, str] = {}
    for message in request.messages:
        out.extend(_translate(message, tool_names))
    return out


def _translate(message: Message, tool_names: dict[str, str]) -> list[dict[str, Any]]:
    # Ollama takes one string per message: separate texts stay separate paragraphs.
    text = "\n\n".join(b.text for b in message.content if isinstance(b, TextBlock) and b.text)
    if message.role == "assistant":
        uses = [b for b in message.content if isinstance(b, ToolUseBlock)]
        entry: dict[str, Any] = {"role": "assistant", "content": text}
        if uses:
            tool_names.update((u.id, u.name) for u in uses)
            entry["tool_calls"] = [
                {"function": {"name": u.name, "arguments": u.input}} for u in uses
            ]
        return [entry]
    out: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            # Ollama pairs a result with its call by tool name, and has no error flag.
            content = f"error: {block.content}" if block.is_error else block.content
            name = block.name or tool_names.get(block.tool_use_id, "")
            out.append({"role": "tool", "content": content, "tool_name": name})
    if text or not out:
        out.append({"role": "user", "content": text})
    return out


def chat_payload(
    request: CompletionRequest, model: str, keep_alive: str | None = None
) -> dict[str, Any]:
    """The /api/chat body; ``stream`` is always explicit (omitted would also mean true)."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": chat_messages(request),
        "stream": True,
        "options": {"num_predict": request.max_tokens},
    }
    if request.tools:
        payload["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    if keep_alive is not None:
        payload["keep_alive"] = keep_alive
    return payload


def _stop_reason(done_reason: object, called_tools: bool) -> StopReason:
    if done_reason in (None, "", "stop"):
        return "tool_use" if called_tools else "end_turn"
    if done_reason == "length":
        return "max_tokens"
    return "other"


class OllamaBridge:
    """Streams chat completions from one Ollama server."""

    name = "ollama"

    def __init__(
        self,
        *,
        url: str,
        model: str,
        first_byte_timeout_s: float = 120.0,
        idle_timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        probe_timeout_s: float = 3.0,
        keep_alive: str | None = None,
        max_connections: int = 8,
    ) -> None:
        self.model = model
        self.url = url.rstrip("/")
        self._first_byte_timeout_s = first_byte_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._probe_timeout_s = probe_timeout_s
        self._keep_alive = keep_alive
        self._upstream = Upstream(
            vendor="Ollama",
            url=self.url,
            key_hint="check the credentials of whatever proxy sits in front of Ollama",
            model_hint="run `ollama pull {model}` on that host, or configure a model it has",
        )
        # Our own timers enforce the deadlines; httpx's read timeout is only a backstop.
        backstop = max(first_byte_timeout_s, idle_timeout_s) + 5.0
        # Sized to the requests the scheduler lets through (plus probes), so every
        # admitted request gets a connection and idle ones are kept for reuse.
        # httpx2, the Anthropic SDK's client, rather than httpx 0.28: httpcore 1.0's pool
        # hands one idle connection to several waiting requests and retries the losers,
        # which cost ~10x the CPU per call at 32 concurrent calls (scripts/bench_bridge.py).
        limits = httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        # trust_env=False: a proxy from the environment must not intercept a local server.
        self._client = httpx2.AsyncClient(
            base_url=self.url,
            timeout=httpx2.Timeout(backstop, connect=connect_timeout_s),
            transport=httpx2.AsyncHTTPTransport(limits=limits),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        model = request.model or self.model
        payload = chat_payload(request, model, self._keep_alive)
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + self._first_byte_timeout_s
        try:
            async with asyncio.timeout_at(first_deadline):
                response = await self._client.send(
                    self._client.build_request("POST", "/api/chat", json=payload), stream=True
                )
        except TimeoutError:
            raise first_byte_timeout(self._upstream, model, self._first_byte_timeout_s) from None
        except httpx2.HTTPError as exc:
            raise self._transport_error(exc, model, started=False) from exc
        try:
            if response.status_code != 200:
                raise await self._status_error(response, model)
            events = self._events(response.aiter_lines(), model, first_deadline)
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        finally:
            await response.aclose()

    async def _events(
        self, lines: AsyncIterator[str], model: str, first_deadline: float
    ) -> AsyncGenerator[ProviderEvent, None]:
        called_tools = False
        first = True
        try:
            while True:
                line = await self._next_line(lines, model, first_deadline if first else None)
                first = False
                if line is None:
                    raise stream_broken(self._upstream, model, "no final done line")
                if not line.strip():
                    continue
                chunk = self._parse(line, model)
                message = chunk.get("message") or {}
                content = message.get("content")
                if content:
                    yield TextDelta(str(content))
                for call in message.get("tool_calls") or ():
                    called_tools = True
                    yield self._tool_call(call, model)
                if chunk.get("done"):
                    await self._drain(lines)
                    yield Usage(
                        input_tokens=int(chunk.get("prompt_eval_count") or 0),
                        output_tokens=int(chunk.get("eval_count") or 0),
                    )
                    yield Stop(_stop_reason(chunk.get("done_reason"), called_tools))
                    return
        finally:
            aclose = getattr(lines, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _next_line(
        self, lines: AsyncIterator[str], model: str, first_deadline: float | None
    ) -> str | None:
        """The next line (None at the end); the first one is under the first-byte deadline."""
        try:
            return await next_in_time(
                lines,
                self._upstream,
                model,
                first_deadline=first_deadline,
                first_byte_timeout_s=self._first_byte_timeout_s,
                idle_timeout_s=self._idle_timeout_s,
            )
        except httpx2.HTTPError as exc:
            raise self._transport_error(exc, model, started=True) from exc

    def _parse(self, line: str, model: str) -> dict[str, Any]:
        try:
            chunk = json.loads(line)
        except ValueError:
            raise bad_payload(self._upstream, model, f"not a JSON line: {line[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise bad_payload(self._upstream, model, f"not a JSON object: {line[:200]!r}")
        if "error" in chunk:
            raise mid_stream_failure(self._upstream, model, str(chunk["error"]))
        return chunk

    def _tool_call(self, call: Any, model: str) -> ToolCall:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not function.get("name"):
            raise bad_payload(self._upstream, model, f"malformed tool call {call!r}")
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):  # some servers and models send a JSON string
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                raise bad_payload(
                    self._upstream, model, f"tool arguments are not JSON: {arguments[:200]!r}"
                ) from None
        if not isinstance(arguments, dict):
            raise bad_payload(self._upstream, model, f"tool arguments are not an object: {call!r}")
        # Older servers send no id; the agent loop needs one to pair call and result.
        call_id = str(call.get("id") or f"call_{uuid.uuid4().hex}")
        return ToolCall(id=call_id, name=str(function["name"]), arguments=arguments)

    async def _drain(self, lines: AsyncIterator[str]) -> None:
        try:
            async with asyncio.timeout(min(_DRAIN_S, self._idle_timeout_s)):
                async for _ in lines:
                    pass
        except (TimeoutError, httpx2.HTTPError):
            log.debug("Ollama at %s did not end the body after the done line", self.url)

    async def _status_error(self, response: httpx2.Response, model: str) -> AgentError:
        try:
            async with asyncio.timeout(self._idle_timeout_s):
                raw = await response.aread()
        except (TimeoutError, httpx2.HTTPError):
            raw = b""
        detail = raw.decode("utf-8", "replace").strip()
        try:
            body = json.loads(raw)
            if isinstance(body, dict) and body.get("error"):
                detail = str(body["error"])
        except ValueError:
            pass
        return from_status(
            self._upstream, response.status_code, detail, model=model, headers=response.headers
        )

    def _transport_error(self, exc: httpx2.HTTPError, model: str, *, started: bool) -> AgentError:
        if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
            return connect_failure(self._upstream, exc)
        if isinstance(exc, httpx2.TimeoutException):
            if started:
                return idle_timeout(self._upstream, model, self._idle_timeout_s)
            return first_byte_timeout(self._upstream, model, self._first_byte_timeout_s)
        if started:
            return stream_broken(self._upstream, model, str(exc) or type(exc).__name__)
        return connect_failure(self._upstream, exc)

    async def probe(self) -> ProviderHealth:
        """Version and installed models; never raises."""
        try:
            async with asyncio.timeout(self._probe_timeout_s):
                version_response = await self._client.get("/api/version")
                version_response.raise_for_status()
                version = str(version_response.json().get("version", ""))
                tags_response = await self._client.get("/api/tags")
                tags_response.raise_for_status()
                names = _model_names(tags_response.json().get("models") or [])
        except TimeoutError:
            return ProviderHealth(
                reachable=False,
                detail=f"Ollama at {self.url} did not answer within {self._probe_timeout_s:g} s",
            )
        except httpx2.HTTPStatusError as exc:
            return ProviderHealth(
                reachable=False,
                detail=f"Ollama at {self.url} answered HTTP {exc.response.status_code}",
            )
        except (httpx2.HTTPError, ValueError, AttributeError) as exc:
            reason = connect_failure(self._upstream, exc).message
            return ProviderHealth(reachable=False, detail=reason)
        available = _canonical(self.model) in names
        detail = (
            f"Ollama {version} at {self.url}, model '{self.model}' installed"
            if available
            else f"Ollama {version} at {self.url} lacks model '{self.model}': "
            f"run `ollama pull {self.model}`"
        )
        return ProviderHealth(
            reachable=True, detail=detail, version=version, model_available=available
        )

    async def inventory(self, *, installed: bool) -> HostInventory:
        """The models loaded now (``/api/ps``) and, if asked, installed (``/api/tags``).

        Raises UpstreamLost when the host cannot be reached (``refused`` when it
        refused the connection) and ProviderError for any other failure: the
        health checks count either as a failed probe.
        """
        try:
            async with asyncio.timeout(self._probe_timeout_s):
                ps = await self._client.get("/api/ps")
                loaded: set[str] = set()
                if ps.status_code != 404:  # older servers lack /api/ps: nothing known loaded
                    ps.raise_for_status()
                    loaded = _model_names(ps.json().get("models") or [])
                names: set[str] | None = None
                if installed:
                    tags = await self._client.get("/api/tags")
                    tags.raise_for_status()
                    names = _model_names(tags.json().get("models") or [])
        except TimeoutError:
            raise ProviderError(
                f"Ollama at {self.url} did not answer within {self._probe_timeout_s:g} s"
            ) from None
        except httpx2.HTTPStatusError as exc:
            raise ProviderError(
                f"Ollama at {self.url} answered HTTP {exc.response.status_code}"
            ) from None
        except httpx2.HTTPError as exc:
            raise connect_failure(self._upstream, exc) from None
        except (ValueError, AttributeError) as exc:
            raise ProviderError(f"Ollama at {self.url} sent an unreadable answer: {exc}") from None
        return HostInventory(
            loaded=frozenset(loaded), installed=None if names is None else frozenset(names)
        )


def _canonical(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _model_names(models: Sequence[Any]) -> set[str]:
    names: set[str] = set()
    for entry in models:
        if isinstance(entry, dict):
            for key in ("name", "model"):
                if entry.get(key):
                    names.add(_canonical(str(entry[key])))
    return names
