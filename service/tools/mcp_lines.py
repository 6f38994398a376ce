"""A stdio MCP server's output, bounded: its messages by size, its stderr by line and rate.

Both are pure byte-stream folds (no process, no clock of their own), so they
are tested directly; ``mcp_stdio`` feeds them what the server writes.

A message (one line of stdout) over the limit is never held in memory: once
the limit is passed the rest of the line is skipped as it arrives, and the
caller learns the request id the message answered (read from its first or
last bytes, where JSON-RPC encoders put ``"id"``), so that one call can end
with an error instead of waiting for its timeout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

# Where to look for the id of an oversized message: its first and last bytes.
_PEEK_BYTES = 512
_ID = re.compile(rb'"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.){0,200}")')


@dataclass(frozen=True, slots=True)
class Oversized:
    """A message over the limit was skipped; ``request_id`` None when it could not be read."""

    request_id: int | str | None
    size: int  # bytes seen before the skip was reported


def _request_id(data: bytes) -> int | str | None:
    found = _ID.search(data)
    if found is None:
        return None
    raw = found.group(1)
    if raw.startswith(b'"'):
        return raw[1:-1].decode("utf-8", "replace")
    return int(raw)


class BoundedLines:
    """Splits a byte stream into lines of at most ``max_bytes``; longer ones become Oversized."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._buffer = bytearray()
        self._skipping = False
        self._reported = False
        self._skipped = 0
        self._tail = b""

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        """Complete lines (without the newline) and skip reports, in order."""
        out: list[bytes | Oversized] = []
        start = 0
        while start <= len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            if self._skipping:
                self._skip(piece)
            else:
                self._buffer += piece
                if len(self._buffer) > self._max:
                    self._begin_skip(out)
            if end < 0:
                break
            self._end_line(out)
            start = end + 1
        return out

    def _begin_skip(self, out: list[bytes | Oversized]) -> None:
        head = bytes(self._buffer[:_PEEK_BYTES])
        self._skipped = len(self._buffer)
        self._tail = bytes(self._buffer[-_PEEK_BYTES:])
        self._buffer = bytearray()
        self._skipping = True
        request_id = _request_id(head)
        if request_id is not None:  # tell at once: the call need not wait for the line's end
            out.append(Oversized(request_id, self._skipped))
            self._reported = True

    def _skip(self, piece: bytes) -> None:
        self._skipped += len(piece)
        self._tail = (self._tail + piece)[-_PEEK_BYTES:]

    def _end_line(self, out: list[bytes | Oversized]) -> None:
        if self._skipping:
            if not self._reported:
                out.append(Oversized(_request_id(self._tail), self._skipped))
            self._skipping, self._reported, self._skipped, self._tail = False, False, 0, b""
        elif self._buffer.strip():
            out.append(bytes(self._buffer))
        self._buffer = bytearray()


class StderrLog:
    """A server's stderr as log lines: each cut to ``line_chars``, at most ``per_minute``.

    Lines over the rate are counted, not logged; the count is logged with the
    next line that fits. A line longer than ``line_chars`` is cut as it arrives,
    so a server writing megabytes without a newline costs no memory.
    """

    def __init__(
        self,
        server: str,
        logger: logging.Logger,
        *,
        line_chars: int,
        per_minute: int,
        clock: Callable[[], float],
    ) -> None:
        self._server = server
        self._log = logger
        self._line_bytes = line_chars
        self._per_minute = per_minute
        self._clock = clock
        self._tokens = float(per_minute)
        self._at = clock()
        self._dropped = 0
        self._line = bytearray()
        self._cut = 0  # bytes of the current line past line_chars

    def feed(self, data: bytes) -> None:
        start = 0
        while start <= len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            room = self._line_bytes - len(self._line)
            self._line += piece[: max(0, room)]
            self._cut += max(0, len(piece) - max(0, room))
            if end < 0:
                break
            self._emit()
            start = end + 1

    def close(self) -> None:
        """The stream ended: log what is left of the last line, and any count not yet said."""
        if self._line or self._cut:
            self._emit()
        if self._dropped:
            self._log.warning(
                "MCP server %r: %d stderr line(s) not logged (over %d a minute)",
                self._server,
                self._dropped,
                self._per_minute,
            )
            self._dropped = 0

    def _emit(self) -> None:
        text = self._line.decode("utf-8", "replace").rstrip()
        cut = self._cut
        self._line, self._cut = bytearray(), 0
        if not text and not cut:
            return
        now = self._clock()
        self._tokens = min(
            float(self._per_minute), self._tokens + (now - self._at) * self._per_minute / 60.0
        )
        self._at = now
        if self._tokens < 1.0:
            self._dropped += 1
            return
        self._tokens -= 1.0
        suffix = f" [... {cut} more bytes]" if cut else ""
        if self._dropped:
            suffix += f" ({self._dropped} earlier line(s) not logged: over {self._per_minute}/min)"
            self._dropped = 0
        self._log.info("MCP server %r stderr: %s%s", self._server, text, suffix)
