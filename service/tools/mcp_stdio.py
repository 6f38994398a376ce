"""The stdio transport of an MCP server, with its output bounded.

The SDK's ``stdio_client`` reads a whole stdout line into memory however long
it is, then parses it (a 50 MB tool result held the service's CPU for most
of a minute), and lets the server's stderr straight into the service's own.
This transport starts the server the same way (a minimal environment plus the
configured variables, a session of its own so the whole tree can be stopped)
but reads stdout through ``BoundedLines`` and stderr through ``StderrLog``.

A message over ``max_message_bytes`` is skipped as it arrives; the call it
answered gets a JSON-RPC error naming the limit. When its id cannot be read,
the connection is ended instead (the server is restarted), so no call waits
for an answer that will never come.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from anyio.abc import Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import types
from mcp.client.stdio import get_default_environment
from mcp.shared.message import SessionMessage

from service.tools.mcp_lines import BoundedLines, Oversized, StderrLog

log = logging.getLogger(__name__)

Streams = tuple[
    MemoryObjectReceiveStream[SessionMessage | Exception],
    MemoryObjectSendStream[SessionMessage],
]
# JSON-RPC's "internal error": the server did answer, but not in a form we accept.
_TOO_LARGE_CODE = -32603
_EXIT_GRACE_S = 2.0  # after stdin closes, before the process group is terminated
_KILL_AFTER_S = 2.0  # after SIGTERM, before SIGKILL
STDERR_LINE_CHARS = 1000
STDERR_LINES_PER_MINUTE = 120


class TooLarge(Exception):
    """A message over the limit whose request could not be told: the connection must end."""


@contextlib.asynccontextmanager
async def bounded_stdio(
    name: str,
    command: str,
    args: list[str],
    env: dict[str, str],
    *,
    max_message_bytes: int,
) -> AsyncIterator[Streams]:
    """Start the server and yield the session's (read, write) streams; stop it on exit."""
    process = await anyio.open_process(
        [command, *args],
        env=get_default_environment() | env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    to_session, read = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write, from_session = anyio.create_memory_object_stream[SessionMessage](0)
    stderr_log = StderrLog(
        name,
        log,
        line_chars=STDERR_LINE_CHARS,
        per_minute=STDERR_LINES_PER_MINUTE,
        clock=time.monotonic,
    )

    async def read_stdout() -> None:
        assert process.stdout is not None
        lines = BoundedLines(max_message_bytes)
        delivering = True  # the session still listens; afterwards output is only drained
        async with to_session:
            async for chunk in process.stdout:
                for item in lines.feed(chunk):
                    if not delivering:
                        continue
                    try:
                        await to_session.send(_message(name, item, max_message_bytes))
                    except TooLarge as exc:
                        log.warning("%s; ending the connection", exc)
                        delivering = False
                        await to_session.aclose()
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        delivering = False

    async def read_stderr() -> None:
        assert process.stderr is not None
        try:
            async for chunk in process.stderr:
                stderr_log.feed(chunk)
        finally:
            stderr_log.close()

    async def write_stdin() -> None:
        assert process.stdin is not None
        try:
            async with from_session:
                async for message in from_session:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await process.stdin.send(data.encode() + b"\n")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await to_session.aclose()  # the session sees the end rather than hanging

    async with anyio.create_task_group() as group:
        group.start_soon(_quietly, read_stdout)
        group.start_soon(_quietly, read_stderr)
        group.start_soon(_quietly, write_stdin)
        try:
            yield read, write
        finally:
            with anyio.CancelScope(shield=True):
                await read.aclose()
                await write.aclose()
                await _stop(process)
            group.cancel_scope.cancel()


def _message(name: str, item: bytes | Oversized, limit: int) -> SessionMessage | Exception:
    if isinstance(item, bytes):
        try:
            return SessionMessage(types.jsonrpc_message_adapter.validate_json(item))
        except ValueError as exc:
            log.warning("MCP server %r sent a message that is not JSON-RPC: %s", name, exc)
            return exc
    what = f"MCP server {name!r} sent a message over max_message_bytes={limit}"
    if item.request_id is None:
        raise TooLarge(f"{what} (no request id found)")
    error = {"code": _TOO_LARGE_CODE, "message": f"{what}; the answer was dropped"}
    return SessionMessage(
        types.jsonrpc_message_adapter.validate_python(
            {"jsonrpc": "2.0", "id": item.request_id, "error": error}
        )
    )


async def _quietly(reader: Callable[[], Awaitable[None]]) -> None:
    """Run a pipe task; the pipe ending under it is the normal way for it to stop."""
    with contextlib.suppress(
        anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError
    ):
        await reader()


async def _stop(process: Process) -> None:
    """Close stdin, give the server a moment to exit, then end its whole process group."""
    if process.stdin is not None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
    for sig, wait_s in ((None, _EXIT_GRACE_S), (signal.SIGTERM, _KILL_AFTER_S)):
        if sig is not None:
            _signal_group(process, sig)
        if await _exited(process, wait_s):
            return
    _signal_group(process, signal.SIGKILL)
    await _exited(process, _KILL_AFTER_S)


def _signal_group(process: Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def _exited(process: Process, wait_s: float) -> bool:
    # wait() also waits for the pipes to close, which a grandchild may hold: bounded.
    with anyio.move_on_after(wait_s):
        await process.wait()
    return process.returncode is not None
