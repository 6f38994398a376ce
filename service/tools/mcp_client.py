"""One MCP server connection, kept alive by a task of its own.

The SDK's transports and ``ClientSession`` are anyio context managers whose
task groups must be entered and left by the same task, so each server gets a
long-lived owner task that opens them, lists the tools, waits until the
connection ends, and reconnects with backoff. Tool calls come from the
agent's tasks and only await requests on the current session.

A stdio server that exits is noticed at once: the owner reads the server's
messages through a small pump that ends when the server's stdout does. An
HTTP server is checked with a ping whenever a call fails for a reason other
than the tool's own error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import ClientSession, MCPError, types
from mcp.shared.message import SessionMessage
from mcp.types import CONNECTION_CLOSED

from service.config import McpServerSection
from service.tools.mcp_content import clip
from service.tools.mcp_http import bounded_http
from service.tools.mcp_stdio import bounded_stdio

log = logging.getLogger(__name__)

McpState = Literal["connecting", "ready", "unavailable", "stopped"]
Streams = tuple[Any, Any]  # the transport's (read, write) pair; the SDK's aliases are private
_PING_TIMEOUT_S = 5.0
_CLIENT_INFO = types.Implementation(name="agent-service", version="1")


class McpUnavailable(Exception):
    """The server cannot take calls now; the message says why, for the model and operators."""


@dataclass(frozen=True, slots=True)
class McpServerInfo:
    """What GetStatus reports about one MCP server."""

    name: str
    transport: str
    state: McpState
    tools: tuple[str, ...]  # the names offered to the model
    last_error: str
    restarts: int  # connections made after the first one


class McpConnection:
    """Connects to one configured server and reconnects whenever the connection ends."""

    def __init__(
        self,
        config: McpServerSection,
        *,
        on_tools: Callable[[McpConnection, list[types.Tool]], None],
        retry_initial_s: float,
        retry_max_s: float,
    ) -> None:
        self.config = config
        self._on_tools = on_tools
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._session: ClientSession | None = None
        self._state: McpState = "connecting"
        self._last_error = ""
        self._connections = 0
        self._ended = asyncio.Event()  # the current connection is over (or must end)
        self._stopping = asyncio.Event()
        self._settled = asyncio.Event()  # the first attempt succeeded or failed
        self._task: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state(self) -> McpState:
        return self._state

    @property
    def last_error(self) -> str:
        return self._last_error

    @property
    def restarts(self) -> int:
        return max(0, self._connections - 1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mcp-server-{self.name}")

    async def wait_settled(self) -> None:
        await self._settled.wait()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """End the connection (a stdio server is told to exit, then killed) and stop retrying."""
        self._stopping.set()
        self._ended.set()
        for check in list(self._checks):
            check.cancel()
        if self._task is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self._task)
            except TimeoutError:
                log.warning(
                    "MCP server %r did not stop in %.0f s; cancelling", self.name, timeout_s
                )
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._state = "stopped"

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call a tool on the current session; McpUnavailable when there is none or it broke."""
        session = self._session
        if session is None:
            detail = f"; last error: {self._last_error}" if self._last_error else ""
            raise McpUnavailable(
                f"MCP server {self.name!r} is not connected ({self._state}{detail}); "
                "it is being retried, try again later"
            )
        try:
            return await session.call_tool(tool, arguments)
        except MCPError as exc:
            # Over HTTP the SDK also reports a request whose answer stream failed
            # (say an event over the size limit) this way: its own message says why.
            if exc.code == CONNECTION_CLOSED and self.config.transport == "stdio":
                raise McpUnavailable(
                    f"MCP server {self.name!r} closed the connection during the call "
                    "(it exited?); it is being restarted, try again later"
                ) from exc
            self._check_alive(session)
            # The server's error text is as untrusted as its results: cut the same way.
            raise McpUnavailable(
                clip(f"MCP server {self.name!r} failed the call: {exc.message}")
            ) from exc
        except (
            OSError,
            httpx2.HTTPError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ) as exc:
            self._check_alive(session)
            raise McpUnavailable(
                clip(f"MCP server {self.name!r} failed the call: {_describe(exc)}")
            ) from exc

    def _check_alive(self, session: ClientSession) -> None:
        """Ping in the background; a server that does not answer is reconnected."""
        if self._stopping.is_set() or session is not self._session:
            return

        async def check() -> None:
            try:
                with anyio.fail_after(_PING_TIMEOUT_S):
                    await session.send_ping()
            except TimeoutError:
                if session is self._session:
                    self._end(f"the server did not answer a ping in {_PING_TIMEOUT_S:g} s")
            except Exception as exc:
                if session is self._session:
                    self._end(f"the server stopped answering: {_describe(exc)}")

        task = asyncio.create_task(check(), name=f"mcp-ping-{self.name}")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def _end(self, reason: str) -> None:
        if not self._ended.is_set():
            # Calls from now on get "not connected" rather than a broken session.
            self._session = None
            if not self._stopping.is_set():
                self._last_error = reason
                self._state = "unavailable"
            self._ended.set()

    async def _run(self) -> None:
        failures = 0  # consecutive attempts that never got ready
        while not self._stopping.is_set():
            self._state = "connecting"
            self._ended = asyncio.Event()
            before = self._connections
            try:
                await self._connect_and_serve()
            except Exception as exc:
                self._last_error = _describe(exc)
            finally:
                self._session = None
            self._settled.set()
            if self._stopping.is_set():
                break
            failures = 0 if self._connections > before else failures + 1
            delay = min(self._retry_max_s, self._retry_initial_s * 2 ** max(0, failures - 1))
            self._state = "unavailable"
            log.warning(
                "MCP server %r unavailable (%s); retrying in %.1f s",
                self.name,
                self._last_error,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        self._state = "stopped"

    async def _connect_and_serve(self) -> None:
        async with AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport())
            sink, source = anyio.create_memory_object_stream[SessionMessage | Exception](0)
            group = await stack.enter_async_context(anyio.create_task_group())
            # Leaving the session must not wait for the pump, which only ends with the transport.
            stack.callback(group.cancel_scope.cancel)
            group.start_soon(self._pump, read, sink)
            session = await stack.enter_async_context(
                ClientSession(source, write, client_info=_CLIENT_INFO)
            )
            started = time.monotonic()
            with anyio.fail_after(self.config.connect_timeout_s):
                await session.initialize()
                tools = await _list_tools(session)
            self._connections += 1
            self._on_tools(self, tools)
            self._session = session
            self._state = "ready"
            self._settled.set()
            log.info(
                "MCP server %r ready with %d tool(s) in %.2f s",
                self.name,
                len(tools),
                time.monotonic() - started,
            )
            await self._ended.wait()
            self._session = None

    def _transport(self) -> AbstractAsyncContextManager[Streams]:
        config = self.config
        if config.transport == "stdio":
            return bounded_stdio(
                config.name,
                config.command,
                config.args,
                config.env,
                max_message_bytes=config.max_message_bytes,
            )
        return bounded_http(config.url, config.headers, max_message_bytes=config.max_message_bytes)

    async def _pump(
        self,
        source: MemoryObjectReceiveStream[SessionMessage | Exception],
        sink: MemoryObjectSendStream[SessionMessage | Exception],
    ) -> None:
        """Pass the server's messages on; when they end, the connection is over."""
        try:
            async with sink:
                async for item in source:
                    await sink.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            pass
        finally:
            self._end("the server closed the connection (exited)")


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _describe(exc: BaseException) -> str:
    """One line for an exception, looking inside the task groups' exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timed out connecting and listing the tools"
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if str(exc) else text
