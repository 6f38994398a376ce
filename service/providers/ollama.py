"""OllamaBridge: the Provider over Ollama's /api/chat (NDJSON streaming, aiohttp).

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
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp

from service.content import Usage
from service.errors import AgentError, ProviderError
from service.providers.base import (
    CompletionRequest,
    HostInventory,
    ProviderEvent,
    ProviderHealth,
    Stop,
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
from service.providers.ollama_wire import canonical, chat_payload, model_names, stop_reason

log = logging.getLogger(__name__)

# After the done line only the end of the body is left; reading it keeps the
# connection reusable, but never wait long for it.
_DRAIN_S = 1.0


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
        # Our own timers enforce the deadlines (the first-byte one also bounds the wait
        # for a free connection); aiohttp's read timeout is only a backstop.
        backstop = max(first_byte_timeout_s, idle_timeout_s) + 5.0
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=backstop
        )
        self._max_connections = max_connections
        self._chat_url = f"{self.url}/api/chat"
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx: httpcore's pool walks every connection on every
        # request, which at the 1,000 streams of `make bench` cost ~10x the CPU per
        # call and let connects time out (scripts/bench_bridge.py --concurrency 1000).
        # Made on first use, in the running loop, which the session belongs to.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # Sized to the requests the scheduler lets through (plus probes), so every
                # admitted request gets a connection and idle ones are kept for reuse.
                connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0),
                timeout=self._timeout,
                # A proxy from the environment must not intercept a local server.
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        model = request.model or self.model
        payload = chat_payload(request, model, self._keep_alive)
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + self._first_byte_timeout_s
        try:
            async with asyncio.timeout_at(first_deadline):
                response = await self._http().post(self._chat_url, json=payload)
        except aiohttp.ClientError as exc:  # before TimeoutError: a connect timeout is both
            raise self._transport_error(exc, model, started=False) from exc
        except TimeoutError:
            raise first_byte_timeout(self._upstream, model, self._first_byte_timeout_s) from None
        try:
            if response.status != 200:
                raise await self._status_error(response, model)
            events = self._events(_lines(response.content), model, first_deadline)
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        finally:
            if response.content.at_eof():
                response.release()  # read to the end: the connection is kept for reuse
            else:
                response.close()  # closing the socket is what stops Ollama's generation

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
                    yield Stop(stop_reason(chunk.get("done_reason"), called_tools))
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
        except aiohttp.ClientError as exc:
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
        except (TimeoutError, aiohttp.ClientError):
            log.debug("Ollama at %s did not end the body after the done line", self.url)

    async def _status_error(self, response: aiohttp.ClientResponse, model: str) -> AgentError:
        try:
            async with asyncio.timeout(self._idle_timeout_s):
                raw = await response.read()
        except (TimeoutError, aiohttp.ClientError):
            raw = b""
        detail = raw.decode("utf-8", "replace").strip()
        try:
            body = json.loads(raw)
            if isinstance(body, dict) and body.get("error"):
                detail = str(body["error"])
        except ValueError:
            pass
        return from_status(
            self._upstream, response.status, detail, model=model, headers=response.headers
        )

    def _transport_error(
        self, exc: aiohttp.ClientError, model: str, *, started: bool
    ) -> AgentError:
        if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return connect_failure(self._upstream, exc)
        if isinstance(exc, TimeoutError):  # a read that outlasted the backstop
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
                version = str((await self._get_json("/api/version")).get("version", ""))
                names = model_names((await self._get_json("/api/tags")).get("models") or [])
        except aiohttp.ClientResponseError as exc:
            return ProviderHealth(
                reachable=False, detail=f"Ollama at {self.url} answered HTTP {exc.status}"
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            return ProviderHealth(
                reachable=False, detail=connect_failure(self._upstream, exc).message
            )
        except TimeoutError:
            return ProviderHealth(
                reachable=False,
                detail=f"Ollama at {self.url} did not answer within {self._probe_timeout_s:g} s",
            )
        except (aiohttp.ClientError, ValueError, AttributeError) as exc:
            return ProviderHealth(
                reachable=False, detail=connect_failure(self._upstream, exc).message
            )
        available = canonical(self.model) in names
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
                # Older servers lack /api/ps: then nothing is known to be loaded.
                ps = await self._get_json("/api/ps", missing_ok=True)
                loaded = model_names(ps.get("models") or [])
                names: set[str] | None = None
                if installed:
                    names = model_names((await self._get_json("/api/tags")).get("models") or [])
        except aiohttp.ClientResponseError as exc:
            raise ProviderError(f"Ollama at {self.url} answered HTTP {exc.status}") from None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise connect_failure(self._upstream, exc) from None
        except TimeoutError:
            raise ProviderError(
                f"Ollama at {self.url} did not answer within {self._probe_timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise connect_failure(self._upstream, exc) from None
        except (ValueError, AttributeError) as exc:
            raise ProviderError(f"Ollama at {self.url} sent an unreadable answer: {exc}") from None
        return HostInventory(
            loaded=frozenset(loaded), installed=None if names is None else frozenset(names)
        )

    async def _get_json(self, path: str, *, missing_ok: bool = False) -> dict[str, Any]:
        """A GET's JSON object; ClientResponseError for an error status ({} for 404 if allowed)."""
        async with self._http().get(f"{self.url}{path}") as response:
            if missing_ok and response.status == 404:
                return {}
            response.raise_for_status()
            body = await response.json(content_type=None)  # any type: older servers vary
        if not isinstance(body, dict):
            raise ValueError(f"not a JSON object: {body!r:.200}")
        return body


async def _lines(body: aiohttp.StreamReader) -> AsyncGenerator[str, None]:
    """The body's lines as they arrive, however its bytes are split into chunks."""
    pending = b""
    async for chunk in body.iter_any():
        *whole, pending = (pending + chunk).split(b"\n")
        for line in whole:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")
