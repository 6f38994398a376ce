"""An MCP server for the tests, built with the SDK's server side.

Run as a script it serves stdio (the crash and hang tests start it as a
stdio server); ``build_server()`` is also served over streamable HTTP by
the tests. Its tools can be told to misbehave: exit mid-call, hang, fail.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp import MCPError
from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

# A 1x1 PNG: the smallest real image a tool can return.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a1e0a1f80000000049454e44ae426082"
)


def build_server() -> MCPServer:
    server = MCPServer("test-tools")

    @server.tool(description="Repeat the text back, with the server's process id.")
    def echo(text: str) -> str:
        return f"echo from {os.getpid()}: {text}"

    @server.tool(description="The value of an environment variable of the server process.")
    def getenv(name: str) -> str:
        return os.environ.get(name, "<unset>")

    @server.tool(description="Exit the server process at once, without answering.")
    def crash() -> str:
        os._exit(3)

    @server.tool(description="Sleep far longer than any test's timeout.")
    async def hang() -> str:
        await asyncio.sleep(3600)
        return "woke up"

    @server.tool(description="Always fail with a message.")
    def fail(reason: str) -> str:
        raise ToolError(f"refused: {reason}")

    @server.tool(description="A text of `size` characters.")
    def big(size: int) -> str:
        return "x" * size

    @server.tool(description="Fail the call itself (a JSON-RPC error) with a long message.")
    def huge_error(size: int) -> str:
        raise MCPError(-32099, "e" * size)

    @server.tool(description="Write `lines` lines of `width` characters to stderr.")
    def shout(lines: int, width: int) -> str:
        for n in range(lines):
            sys.stderr.write(f"line {n} " + "s" * width + "\n")
        sys.stderr.flush()
        return "shouted"

    @server.tool(description="A picture and a caption.", structured_output=False)
    def picture() -> list[object]:
        return ["a single pixel", Image(data=PIXEL, format="png")]

    return server


if __name__ == "__main__":
    asyncio.run(build_server().run_stdio_async())
