"""AnthropicBridge: the Provider over the Messages API, through the official SDK's stream helper.

Retries are this module's, not the SDK's (its ``max_retries`` is 0): the same
cases (connection errors, 408/409/429/5xx) and the same waits (the provider's
``retry-after-ms`` / ``retry-after``, else exponential back-off), but only
while the wait is short (``max_retry_wait_s``) and ends before the first-byte
deadline. A longer hint is passed on at once as RESOURCE_EXHAUSTED /
UNAVAILABLE with that hint: the SDK would sleep through it inside our
first-byte timeout (ending as a 504 that loses the hint) while the request
holds a provider slot. Nothing is retried once a stream has started.
``first_byte_timeout_s`` bounds the time to the first event including the
retries; ``idle_timeout_s`` bounds each silence after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Callable
from typing import Any

import anthropic
import httpx2
from anthropic.lib.streaming import AsyncMessageStream, ParsedMessageStreamEvent
from anthropic.types import (
    MetadataParam,
    TextBlockParam,
)

from service.content import Usage
from service.errors import AgentError, Code, ProviderError, Reason
from service.providers.anthropic_wire import (
    cache_breakpoints,
    message_params,
    tool_params,
    updated_usage,
)
from service.providers.base import (
    CompletionRequest,
    ProviderEvent,
    ProviderHealth,
    Stop,
    StopReason,
    TextDelta,
    ToolCall,
)
from service.providers.errors import (
    ANTHROPIC_ERROR_STATUS,
    Upstream,
    bad_payload,
    connect_failure,
    first_byte_timeout,
    from_status,
    idle_timeout,
    next_in_time,
    parse_retry_after,
    stream_broken,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.anthropic.com"
# The SDK's back-off: 0.5 s doubling up to 8 s, with up to 25 % jitter.
_BACKOFF_BASE_S = 0.5
_BACKOFF_MAX_S = 8.0
# After message_stop only the end of the body is left; reading it keeps the
# connection reusable, but never wait long for it.
_DRAIN_S = 1.0

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "refusal": "refusal",
}


class AnthropicBridge:
    """Streams Messages API completions through one long-lived AsyncAnthropic client."""

    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str | None,
        model: str,
        base_url: str | None = None,
        max_retries: int = 2,
        max_retry_wait_s: float = _BACKOFF_MAX_S,
        first_byte_timeout_s: float = 120.0,
        idle_timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        probe_timeout_s: float = 5.0,
        prompt_caching: bool = True,
    ) -> None:
        self.model = model
        self._prompt_caching = prompt_caching
        self.url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key or ""
        self._max_retries = max_retries
        self._max_retry_wait_s = max_retry_wait_s
        self._first_byte_timeout_s = first_byte_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._probe_timeout_s = probe_timeout_s
        self._upstream = Upstream(
            vendor="Anthropic",
            url=self.url,
            key_hint="set a valid ANTHROPIC_API_KEY for the service",
            model_hint="check the configured model name (AGENT_ANTHROPIC__MODEL)",
        )
        # Our own timers enforce the deadlines; the SDK's read timeout is only a backstop.
        backstop = max(first_byte_timeout_s, idle_timeout_s) + 5.0
        # An explicit key (even empty) keeps the SDK from reading credentials elsewhere.
        self._client = anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.url,
            max_retries=0,  # one retry loop, ours: see the module docstring
            timeout=httpx2.Timeout(backstop, connect=connect_timeout_s),
        )

    async def aclose(self) -> None:
        await self._client.close()

    def _missing_key(self) -> ProviderError:
        return self._upstream.error(
            "no Anthropic API key is configured; set ANTHROPIC_API_KEY for the service",
            Code.FAILED_PRECONDITION,
            Reason.PROVIDER_NOT_CONFIGURED,
        )

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        if not self._api_key:
            raise self._missing_key()
        model = request.model or self.model
        messages, tools = message_params(request), tool_params(request)
        system: list[TextBlockParam] = (
            [{"type": "text", "text": request.system}] if request.system else []
        )
        caching = self._prompt_caching and request.cacheable
        if caching:
            cache_breakpoints(system, tools, messages)

        def open_stream() -> anthropic.AsyncMessageStreamManager[Any]:
            return self._client.messages.stream(
                model=model,
                max_tokens=request.max_tokens,
                messages=messages,
                # A plain string when nothing is marked: the shape the API documents first.
                system=(system if caching else request.system) or anthropic.omit,
                tools=tools or anthropic.omit,
                metadata=(
                    MetadataParam(user_id=request.user_id) if request.user_id else anthropic.omit
                ),
            )

        first_deadline = asyncio.get_running_loop().time() + self._first_byte_timeout_s
        async with contextlib.AsyncExitStack() as stack:
            stream = await self._open(stack, open_stream, model, first_deadline)
            events = self._events(stream, model, first_deadline)
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event

    async def _open(
        self,
        stack: contextlib.AsyncExitStack,
        open_stream: Callable[[], anthropic.AsyncMessageStreamManager[Any]],
        model: str,
        first_deadline: float,
    ) -> AsyncMessageStream[Any]:
        """Send the request; retry while the wait is short and ends before the deadline."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                async with asyncio.timeout_at(first_deadline):
                    return await stack.enter_async_context(open_stream())
            except TimeoutError:
                raise first_byte_timeout(
                    self._upstream, model, self._first_byte_timeout_s
                ) from None
            except anthropic.APIError as exc:
                wait = self._retry_wait(exc, attempt)
                if (
                    wait is None
                    or attempt >= self._max_retries
                    or loop.time() + wait >= first_deadline
                ):
                    raise self._api_error(exc, model, started=False) from exc
                log.info("Anthropic: %s; retrying in %.2f s", exc.message, wait)
            attempt += 1
            await asyncio.sleep(wait)

    def _retry_wait(self, exc: anthropic.APIError, attempt: int) -> float | None:
        """Seconds to wait before retrying ``exc``; None when it is not worth retrying now."""
        if isinstance(exc, anthropic.APITimeoutError):
            return None  # only the backstop timeout: the first-byte deadline is gone
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            if status < 500 and status not in (408, 409, 429):
                return None
            hint = parse_retry_after(exc.response.headers)
            if hint is not None:
                return hint if hint <= self._max_retry_wait_s else None
        elif not isinstance(exc, anthropic.APIConnectionError):
            return None
        backoff = min(_BACKOFF_BASE_S * 2.0**attempt, _BACKOFF_MAX_S)
        return min(backoff * (1 - 0.25 * random.random()), self._max_retry_wait_s)

    async def _events(
        self, stream: AsyncMessageStream[Any], model: str, first_deadline: float
    ) -> AsyncGenerator[ProviderEvent, None]:
        usage = Usage()
        stop_reason: str | None = None
        first = True
        while True:
            event = await self._next_event(stream, model, first_deadline if first else None)
            first = False
            if event is None:
                raise stream_broken(self._upstream, model, "no message_stop event")
            if event.type == "message_start":
                start = event.message.usage
                usage = Usage(
                    start.input_tokens,
                    start.output_tokens,
                    start.cache_creation_input_tokens or 0,
                    start.cache_read_input_tokens or 0,
                )
            elif event.type == "content_block_delta":
                if event.delta.type == "text_delta" and event.delta.text:
                    yield TextDelta(event.delta.text)
            elif event.type == "content_block_stop":
                block = event.content_block
                if block.type == "tool_use":
                    if not isinstance(block.input, dict):
                        raise bad_payload(self._upstream, model, f"tool input {block.input!r}")
                    yield ToolCall(id=block.id, name=block.name, arguments=dict(block.input))
            elif event.type == "message_delta":
                stop_reason = event.delta.stop_reason
                usage = updated_usage(usage, event.usage)
            elif event.type == "message_stop":
                await self._drain(stream)
                yield usage
                yield Stop(_STOP_REASONS.get(stop_reason or "", "other"))
                return

    async def _next_event(
        self, stream: AsyncMessageStream[Any], model: str, first_deadline: float | None
    ) -> ParsedMessageStreamEvent[Any] | None:
        """The next SDK event (None at the end); the first one is under the first-byte deadline."""
        try:
            return await next_in_time(
                stream,
                self._upstream,
                model,
                first_deadline=first_deadline,
                first_byte_timeout_s=self._first_byte_timeout_s,
                idle_timeout_s=self._idle_timeout_s,
            )
        except anthropic.APIError as exc:
            raise self._api_error(exc, model, started=True) from exc
        except httpx2.TimeoutException:
            raise idle_timeout(self._upstream, model, self._idle_timeout_s) from None
        except httpx2.HTTPError as exc:
            raise stream_broken(self._upstream, model, str(exc) or type(exc).__name__) from exc
        except (ValueError, RuntimeError) as exc:  # malformed events or tool JSON
            raise bad_payload(self._upstream, model, str(exc)) from exc

    async def _drain(self, stream: AsyncMessageStream[Any]) -> None:
        try:
            async with asyncio.timeout(min(_DRAIN_S, self._idle_timeout_s)):
                async for _ in stream:
                    pass
        except (TimeoutError, anthropic.APIError, httpx2.HTTPError):
            log.debug("Anthropic at %s did not end the body after message_stop", self.url)

    def _api_error(self, exc: anthropic.APIError, model: str, *, started: bool) -> AgentError:
        if isinstance(exc, anthropic.APITimeoutError):
            if started:
                return idle_timeout(self._upstream, model, self._idle_timeout_s)
            return first_byte_timeout(self._upstream, model, self._first_byte_timeout_s)
        if isinstance(exc, anthropic.APIConnectionError):
            if started:
                return stream_broken(self._upstream, model, exc.message)
            return connect_failure(self._upstream, exc)
        if isinstance(exc, anthropic.APIStatusError):
            detail = exc.api_message or exc.message
            status = exc.status_code
            if status < 400:
                # An `event: error` after a 200: the error type says what it stands for.
                error_type = exc.type or "api_error"
                status = ANTHROPIC_ERROR_STATUS.get(error_type, 500)
                return from_status(
                    self._upstream,
                    status,
                    detail,
                    model=model,
                    label=f"{error_type} mid-stream",
                )
            return from_status(
                self._upstream, status, detail, model=model, headers=exc.response.headers
            )
        return self._upstream.error(
            f"Anthropic request failed: {exc.message}", Code.UNAVAILABLE, Reason.PROVIDER_FAILED
        )

    async def probe(self) -> ProviderHealth:
        """A cheap GET /v1/models/{model}; never raises."""
        if not self._api_key:
            return ProviderHealth(reachable=False, detail=self._missing_key().message)
        client = self._client.with_options(timeout=self._probe_timeout_s, max_retries=0)
        try:
            async with asyncio.timeout(self._probe_timeout_s + 1):
                await client.models.retrieve(self.model)
        except TimeoutError:
            return ProviderHealth(
                reachable=False,
                detail=f"Anthropic at {self.url} did not answer within {self._probe_timeout_s:g} s",
            )
        except anthropic.NotFoundError:
            return ProviderHealth(
                reachable=True,
                detail=f"Anthropic at {self.url} does not know model '{self.model}'",
                model_available=False,
            )
        except anthropic.APIError as exc:
            return ProviderHealth(
                reachable=False, detail=self._api_error(exc, self.model, started=False).message
            )
        return ProviderHealth(
            reachable=True,
            detail=f"Anthropic at {self.url}, model '{self.model}' available",
            model_available=True,
        )
