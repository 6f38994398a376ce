"""A minimal, fast fake Ollama for `make bench`: raw asyncio, answers in microseconds.

Speaks just enough of Ollama's HTTP API for the service: ``GET /``,
``GET /api/version``, ``GET /api/tags`` and a streamed ``POST /api/chat``
(NDJSON, chunked, HTTP/1.1 keep-alive). A chat whose body contains
``tokens=N delay_ms=D`` streams N tokens spaced by D ms instead of the
canned answer; each such token's text is ``<time.time_ns()>`` taken just
before the write, so a client can measure how long the token took to reach it.
``GET /bench/stats`` reports the connections accepted, how many chats ran and
the most that were open at once (and resets that peak).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import time
from dataclasses import asdict, dataclass
from typing import cast

_MODEL = "llama3.2"
_DIRECTIVE = re.compile(rb"tokens=(\d+) delay_ms=(\d+)")
_CANNED = ("Hello", " from", " the", " bench", " backend.")
_NDJSON_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"


def _chunk(obj: object) -> bytes:
    line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
    return b"%x\r\n%s\r\n" % (len(line), line)


def _token(text: str) -> bytes:
    return _chunk(
        {
            "model": _MODEL,
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text},
            "done": False,
        }
    )


def _done(eval_count: int) -> bytes:
    return _chunk(
        {
            "model": _MODEL,
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 12,
            "eval_count": eval_count,
        }
    )


def _json_response(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


def _text_response(status: str, text: str) -> bytes:
    body = text.encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@dataclass
class Counters:
    """Connections accepted; chats run, open now, and the most open at once."""

    connections: int = 0
    chats: int = 0
    active: int = 0
    peak: int = 0

    def opened(self) -> None:
        self.chats += 1
        self.active += 1
        self.peak = max(self.peak, self.active)

    def closed(self) -> None:
        self.active -= 1


class Canned:
    """Responses built once, so the hot path is a single write."""

    def __init__(self) -> None:
        self.chat = (
            _NDJSON_HEAD + b"".join(_token(t) for t in _CANNED) + _done(len(_CANNED)) + _LAST_CHUNK
        )
        self.version = _json_response({"version": "0.0.0-bench"})
        self.tags = _json_response(
            {
                "models": [
                    {
                        "name": f"{_MODEL}:latest",
                        "model": f"{_MODEL}:latest",
                        "size": 1,
                        "digest": "0" * 64,
                        "details": {"family": "llama", "parameter_size": "3B"},
                    }
                ]
            }
        )
        self.root = _text_response("200 OK", "Ollama is running")
        self.missing = _text_response("404 Not Found", "404 page not found")


class Connection(asyncio.Protocol):
    """One keep-alive client connection; requests are handled one after another."""

    def __init__(self, canned: Canned, counters: Counters) -> None:
        self._canned = canned
        self._counters = counters
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._streaming: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._counters.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self._streaming is not None:
            self._streaming.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._serve_buffered()

    def _serve_buffered(self) -> None:
        while self._streaming is None and self._transport is not None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            length = 0
            close = False
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if len(self._buffer) < end + 4 + length:
                return
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            method, path = head[0].split(" ")[:2]
            self._dispatch(method, path, body)
            if close and self._transport is not None and self._streaming is None:
                self._transport.close()

    def _dispatch(self, method: str, path: str, body: bytes) -> None:
        assert self._transport is not None
        canned = self._canned
        if method == "POST" and path == "/api/chat":
            directive = _DIRECTIVE.search(body)
            if directive is None:
                self._counters.opened()
                self._counters.closed()
                self._transport.write(canned.chat)
                return
            tokens, delay_ms = int(directive[1]), int(directive[2])
            self._streaming = asyncio.get_running_loop().create_task(
                self._stream(tokens, delay_ms / 1000.0)
            )
        elif method == "GET" and path == "/api/version":
            self._transport.write(canned.version)
        elif method == "GET" and path == "/api/tags":
            self._transport.write(canned.tags)
        elif method == "GET" and path == "/bench/stats":
            counters = self._counters
            self._transport.write(_json_response(asdict(counters)))
            counters.peak = counters.active
        elif method == "GET" and path == "/":
            self._transport.write(canned.root)
        else:
            self._transport.write(canned.missing)

    async def _stream(self, tokens: int, delay_s: float) -> None:
        self._counters.opened()
        try:
            transport = self._transport
            if transport is None:
                return
            transport.write(_NDJSON_HEAD)
            for i in range(tokens):
                if i:
                    await asyncio.sleep(delay_s)
                if transport.is_closing():
                    return
                transport.write(_token(f"<{time.time_ns()}>"))
            transport.write(_done(tokens) + _LAST_CHUNK)
        finally:
            self._counters.closed()
            self._streaming = None
        self._serve_buffered()


async def serve(host: str, port: int) -> None:
    """Serve until cancelled; prints one ``ready`` line once listening."""
    canned, counters = Canned(), Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(canned, counters), host, port, backlog=4096, reuse_address=True
    )
    print(f"ready http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
