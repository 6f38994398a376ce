"""Scripted replies of the fake providers, and the player that puts one on the wire.

A fake turns a ``Reply`` into a list of frames (NDJSON lines, SSE events);
``play`` sends them with the reply's delays, splits, failures, truncation or
hang. "After N chunks" always counts text chunks.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.fakes.server import Exchange, RecordedRequest


@dataclass(frozen=True)
class ScriptedToolCall:
    """A tool call the fake model makes; ``id`` None lets the fake decide (Ollama: omitted)."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """One scripted answer: content, timing, and how (or whether) it fails."""

    chunks: Sequence[str] = ("Hello", " from", " the fake.")
    tool_calls: Sequence[ScriptedToolCall] = ()
    chunk_delay_s: float = 0.0  # before every text chunk
    initial_delay_s: float = 0.0  # before the status line
    status: int = 200  # >= 400: an error response in the vendor's format
    error_message: str | None = None  # None: the vendor's usual message for that status
    error_type: str | None = None  # Anthropic error type override
    headers: Mapping[str, str] = field(default_factory=dict)
    fail_after: int | None = None  # error line/event after N chunks, status stays 200
    fail_message: str = "the model runner failed mid-stream"
    fail_type: str = "overloaded_error"  # Anthropic error type of a mid-stream failure
    truncate_after: int | None = None  # stop after N chunks without the final line/event
    truncate_cleanly: bool = False  # end the body properly (else drop the connection)
    hang_after: int | None = None  # send N chunks, then nothing until the client leaves
    hold_after: int | None = None  # send N chunks, then wait for ``hold`` to be set, then go on
    hold: threading.Event | None = None  # set by the test (from any thread)
    input_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: str | None = None  # in the vendor's vocabulary; None: the natural one
    split: int | Sequence[int] | Literal["random"] | None = None  # body written in these sizes
    split_seed: int = 0
    lines_per_write: int = 1  # frames (Ollama lines / Anthropic events) per write

    @classmethod
    def text(cls, *chunks: str, **options: Any) -> Reply:
        return cls(chunks=chunks, **options)

    @classmethod
    def tool(cls, name: str, arguments: dict[str, Any], **options: Any) -> Reply:
        options.setdefault("chunks", ())
        return cls(
            tool_calls=(ScriptedToolCall(name, arguments, options.pop("id", None)),), **options
        )

    @classmethod
    def error(cls, status: int, message: str | None = None, **options: Any) -> Reply:
        return cls(status=status, error_message=message, **options)

    @property
    def text_content(self) -> str:
        return "".join(self.chunks)


Responder = Callable[[RecordedRequest], Reply]


class Script:
    """What a fake answers: scripted replies first (FIFO), then the responder."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self._queue: deque[Reply | Responder] = deque()
        self._lock = threading.Lock()

    def push(self, *replies: Reply | Responder) -> None:
        with self._lock:
            self._queue.extend(replies)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    def next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            item = self._queue.popleft() if self._queue else self.responder
        return item if isinstance(item, Reply) else item(request)


def echo_chunks(text: str, pieces: int = 3) -> tuple[str, ...]:
    """Cut ``text`` into about ``pieces`` chunks at spaces; joined they give ``text`` back."""
    words = text.split(" ")
    if len(words) <= 1:
        return (text,)
    size = max(1, -(-len(words) // pieces))
    groups = [words[i : i + size] for i in range(0, len(words), size)]
    chunks = [" ".join(groups[0])] + [" " + " ".join(g) for g in groups[1:]]
    return tuple(chunks)


@dataclass(frozen=True)
class Frame:
    """One unit of a streamed body; ``kind`` tells play where the failure points are."""

    data: bytes
    kind: Literal["head", "chunk", "tail"]


def _piece_sizes(reply: Reply) -> Callable[[], int]:
    split = reply.split
    if split == "random":
        rng = random.Random(reply.split_seed)
        return lambda: rng.randint(1, 12)
    if isinstance(split, int):
        return lambda: split
    assert split is not None and not isinstance(split, str)
    sizes = list(split)
    state = {"i": 0}

    def next_size() -> int:
        size = sizes[state["i"] % len(sizes)]
        state["i"] += 1
        return size

    return next_size


async def play(
    exchange: Exchange,
    reply: Reply,
    frames: Sequence[Frame],
    *,
    content_type: str,
    error_frame: Callable[[], bytes],
) -> None:
    """Stream ``frames`` as ``reply`` says: delays, splits, and the failure it scripts."""
    if reply.initial_delay_s and not await exchange.pause(reply.initial_delay_s):
        return
    exchange.start(200, content_type, dict(reply.headers))
    pending: list[bytes] = []
    next_size = _piece_sizes(reply) if reply.split is not None else None

    async def flush(*, last: bool = False) -> bool:
        data = b"".join(pending)
        pending.clear()
        if next_size is None or not data:
            return await exchange.write(data, last=last) if data or last else True
        while data:
            size = max(1, next_size())
            piece, data = data[:size], data[size:]
            if not await exchange.write(piece, last=last and not data):
                return False
        return True

    sent = 0
    for index, frame in enumerate(frames):
        if frame.kind != "head":
            if reply.fail_after is not None and sent >= reply.fail_after:
                pending.append(error_frame())
                await flush(last=True)
                return
            if reply.truncate_after is not None and sent >= reply.truncate_after:
                if reply.truncate_cleanly:
                    await flush(last=True)
                else:
                    await flush()
                    exchange.abort()
                return
            if reply.hang_after is not None and sent >= reply.hang_after:
                await flush()
                await exchange.wait_gone()
                return
            if reply.hold is not None and reply.hold_after is not None and sent == reply.hold_after:
                if not await flush():
                    return
                # Checked every few ms: the event is set from the test's thread.
                while not reply.hold.is_set():
                    if not await exchange.pause(0.005):
                        return
        if frame.kind == "chunk":
            delay = reply.chunk_delay_s
            if delay and (not await flush() or not await exchange.pause(delay)):
                return
            sent += 1
        pending.append(frame.data)
        # The last frame goes out with the end of the body, so a client that
        # stops reading at the final line has the whole response already.
        is_last = index == len(frames) - 1
        full = len(pending) >= reply.lines_per_write
        if next_size is None and full and not is_last and not await flush():
            return
    await flush(last=True)
