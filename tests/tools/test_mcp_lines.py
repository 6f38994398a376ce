"""The bounded reading of a stdio MCP server's output: message sizes, stderr lines and rate."""

from __future__ import annotations

import logging

import pytest

from service.tools.mcp_lines import BoundedLines, Oversized, StderrLog


def fed(lines: BoundedLines, *chunks: bytes) -> list[bytes | Oversized]:
    out: list[bytes | Oversized] = []
    for chunk in chunks:
        out += lines.feed(chunk)
    return out


def test_lines_split_across_chunks_and_blank_lines_are_skipped() -> None:
    lines = BoundedLines(100)
    assert fed(lines, b'{"a":', b'1}\n\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert fed(lines, b":3}\n") == [b'{"c":3}']


def test_an_oversized_message_is_reported_at_once_when_its_id_comes_first() -> None:
    lines = BoundedLines(1000)
    head = b'{"jsonrpc":"2.0","id":7,"result":{"text":"'
    out = fed(lines, head + b"x" * 600, b"x" * 600)
    assert out == [Oversized(7, len(head) + 1200)]  # before the line has ended
    # The rest is skipped as it comes (never buffered), and the next message is intact.
    assert fed(lines, b"x" * 100_000, b'"}}\n{"jsonrpc":"2.0","id":8,"result":{}}\n') == [
        b'{"jsonrpc":"2.0","id":8,"result":{}}'
    ]
    assert len(lines._buffer) == 0


def test_an_oversized_message_with_its_id_last_is_reported_at_its_end() -> None:
    lines = BoundedLines(1000)
    out = fed(lines, b'{"result":{"text":"' + b"y" * 5000, b'"},"id":"req-9","jsonrpc":"2.0"}\n')
    assert out == [Oversized("req-9", 5000 + 19 + 32)]


def test_an_oversized_message_without_an_id_says_so() -> None:
    lines = BoundedLines(1000)
    assert fed(lines, b"z" * 3000 + b"\n") == [Oversized(None, 3000)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_stderr_lines_are_cut_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("test.mcp.stderr")
    stderr = StderrLog("srv", logger, line_chars=20, per_minute=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.mcp.stderr"):
        stderr.feed(b"short\n" + b"L" * 50)
        stderr.feed(b"L" * 1_000_000 + b"\nthird\nfourth\nfifth\n")  # 3 a minute: 2 dropped
        clock.now = 20.0  # one more fits
        stderr.feed(b"sixth\n")
        stderr.feed(b"seventh\n")  # dropped
        stderr.close()
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "MCP server 'srv' stderr: short",
        f"MCP server 'srv' stderr: {'L' * 20} [... {1_000_050 - 20} more bytes]",
        "MCP server 'srv' stderr: third",
        "MCP server 'srv' stderr: sixth (2 earlier line(s) not logged: over 3/min)",
        "MCP server 'srv': 1 stderr line(s) not logged (over 3 a minute)",
    ]
