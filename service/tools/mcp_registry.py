"""MCP servers as a source of tools: their tools enter the registry as they are listed.

Each configured server gets an ``McpConnection``. When it connects, the tools
it lists (filtered by ``allowed_tools``) replace that server's previous ones
in the ``ToolRegistry``, named ``<server>__<tool>``. They stay offered while
the server is down, so a call then gets an error result saying the server is
being retried rather than an "unknown tool".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from mcp import types

from service.config import McpServerSection
from service.tools.mcp_client import McpConnection, McpServerInfo, McpUnavailable
from service.tools.mcp_content import description, input_schema, offered_name, result_text
from service.tools.registry import Tool, ToolError, ToolRegistry

log = logging.getLogger(__name__)


class McpTools:
    """The configured MCP servers: start, status, stop."""

    def __init__(
        self,
        registry: ToolRegistry,
        servers: Sequence[McpServerSection],
        *,
        default_timeout_s: float,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
    ) -> None:
        self._registry = registry
        self._default_timeout_s = default_timeout_s
        self._offered: dict[str, tuple[str, ...]] = {s.name: () for s in servers}
        self._connections = [
            McpConnection(
                server,
                on_tools=self._replace,
                retry_initial_s=retry_initial_s,
                retry_max_s=retry_max_s,
            )
            for server in servers
        ]

    async def start(self, wait_s: float | None = None) -> None:
        """Connect to every server; wait (at most ``wait_s``) for each first attempt to settle.

        A server that is not there does not hold the service back: it is retried.
        """
        for connection in self._connections:
            connection.start()
        if not self._connections:
            return
        limit = wait_s
        if limit is None:
            limit = max(c.config.connect_timeout_s for c in self._connections)
        settled = asyncio.gather(*(c.wait_settled() for c in self._connections))
        try:
            async with asyncio.timeout(limit):
                await settled
        except TimeoutError:
            log.warning("MCP servers still connecting after %.0f s; going on", limit)

    async def stop(self) -> None:
        """Stop every connection; stdio servers are shut down."""
        await asyncio.gather(*(c.stop() for c in self._connections))

    def status(self) -> list[McpServerInfo]:
        return [
            McpServerInfo(
                name=c.name,
                transport=c.config.transport,
                state=c.state,
                tools=self._offered[c.name],
                last_error=c.last_error,
                restarts=c.restarts,
            )
            for c in self._connections
        ]

    def _replace(self, connection: McpConnection, tools: list[types.Tool]) -> None:
        server = connection.config
        allowed = set(server.allowed_tools) if server.allowed_tools is not None else None
        if allowed is not None:
            missing = allowed - {t.name for t in tools}
            if missing:
                log.warning(
                    "MCP server %r has no tool(s) %s named in allowed_tools",
                    server.name,
                    ", ".join(sorted(missing)),
                )
        for name in self._offered[server.name]:
            self._registry.unregister(name)
        offered: list[str] = []
        for tool in tools:
            if allowed is not None and tool.name not in allowed:
                continue
            made = self._tool(connection, tool)
            try:
                self._registry.register(made)
            except ValueError as exc:  # a clash after sanitizing, or a schema we cannot offer
                log.warning("MCP server %r: tool %r not offered: %s", server.name, tool.name, exc)
                continue
            offered.append(made.name)
        self._offered[server.name] = tuple(offered)

    def _tool(self, connection: McpConnection, tool: types.Tool) -> Tool:
        remote = tool.name

        async def call(arguments: dict[str, Any]) -> str:
            try:
                result = await connection.call_tool(remote, arguments)
            except McpUnavailable as exc:
                raise ToolError(str(exc)) from None
            text = result_text(result)
            if result.is_error:
                raise ToolError(text or f"MCP tool {remote!r} reported an error without a message.")
            return text

        return Tool(
            name=offered_name(connection.name, remote),
            description=description(connection.name, tool),
            parameters=input_schema(tool),
            handler=call,
            timeout_s=connection.config.timeout_s or self._default_timeout_s,
        )
