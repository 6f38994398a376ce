"""Fitting a conversation's history into the model's context budget.

Token counts are estimated, not measured: about four characters per token
plus a small overhead per block and per message. That is close enough to
keep requests inside a context window without a tokenizer on the hot path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from service.content import Block, Message, TextBlock, ToolResultBlock, ToolUseBlock

_CHARS_PER_TOKEN = 4
_MESSAGE_OVERHEAD = 4  # role and framing
_BLOCK_OVERHEAD = 3  # block type and separators
_TOOL_OVERHEAD = 8  # tool ids and names


def estimate_tokens(message: Message) -> int:
    """A cheap, slightly generous estimate of the tokens a message costs."""
    return _MESSAGE_OVERHEAD + sum(_block_tokens(block) for block in message.content)


def estimate_text_tokens(text: str) -> int:
    """The estimate of text sent beside the messages (a system prompt); 0 for none."""
    return _MESSAGE_OVERHEAD + -(-len(text) // _CHARS_PER_TOKEN) if text else 0


def estimate_tool_tokens(name: str, description: str, parameters: Mapping[str, Any]) -> int:
    """The estimate of one tool's schema as it is sent with every model call."""
    schema = json.dumps(parameters, ensure_ascii=False, separators=(",", ":"), default=str)
    chars = len(name) + len(description) + len(schema)
    return _BLOCK_OVERHEAD + _TOOL_OVERHEAD + -(-chars // _CHARS_PER_TOKEN)


def _block_tokens(block: Block) -> int:
    if isinstance(block, TextBlock):
        chars = len(block.text)
        extra = 0
    elif isinstance(block, ToolUseBlock):
        chars = len(block.name) + len(
            json.dumps(block.input, ensure_ascii=False, separators=(",", ":"), default=str)
        )
        extra = _TOOL_OVERHEAD
    else:
        chars = len(block.content) + len(block.name)
        extra = _TOOL_OVERHEAD
    return _BLOCK_OVERHEAD + extra + -(-chars // _CHARS_PER_TOKEN)


def _carries_tool_results(message: Message) -> bool:
    return any(isinstance(block, ToolResultBlock) for block in message.content)


def fit_history(
    messages: Sequence[Message],
    budget_tokens: int,
    estimate: Callable[[Message], int] = estimate_tokens,
) -> list[Message]:
    """The most recent part of ``messages`` whose estimate fits ``budget_tokens``.

    ``estimate`` may look up estimates known already (the store keeps one with
    each message); it must agree with ``estimate_tokens``.

    The result is always a suffix of the input (order and alternation as
    given) that starts at a user message without tool results, so no tool
    result is ever separated from the tool call it answers and providers get
    the plain user turn they require first. The current turn (from the last
    such user message to the end) is kept even when it alone is over budget;
    the caller decides what to do about that. Input without any plain user
    message is returned unchanged: there is no valid place to cut it.
    """
    best: int | None = None  # start of the longest suffix that fits
    latest: int | None = None  # start of the current turn
    total = 0
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        total += estimate(message)
        if message.role != "user" or _carries_tool_results(message):
            continue
        if latest is None:
            latest = index
        if total <= budget_tokens:
            best = index
        else:
            break  # totals only grow from here
    if latest is None:
        return list(messages)
    return list(messages[best if best is not None else latest :])


def stepped_window(
    messages: Sequence[Message],
    budget_tokens: int,
    watermark_tokens: int,
    estimate: Callable[[Message], int] = estimate_tokens,
) -> list[Message]:
    """The part of ``messages`` to send, cut back in steps so the prompt's prefix stays put.

    ``fit_history`` slides the window by one turn whenever the history is over
    budget, so once a conversation has outgrown it the first message of the
    prompt changes on every turn and no provider cache ever sees the same
    prefix twice. Here the window is replayed turn by turn from the start of
    the conversation: it keeps its start while the prompt (from that start
    to the newest turn's user message) fits ``budget_tokens``; when it does
    not, it is cut to the oldest turn start from which the prompt fits
    ``watermark_tokens``, and grows again from there. Between two cuts every
    prompt therefore begins with the whole previous one.

    The replay depends only on the messages, so the same history always
    gives the same window; nothing is stored. Like ``fit_history``, the
    result starts at a plain user message (tool calls keep their results),
    the current turn is kept even when it alone is over budget, and input
    without a plain user message is returned unchanged. A watermark at or
    above the budget gives ``fit_history``'s window.
    """
    starts = [
        i for i, m in enumerate(messages) if m.role == "user" and not _carries_tool_results(m)
    ]
    if not starts:
        return list(messages)
    watermark = min(watermark_tokens, budget_tokens)
    prefix = [0]  # prefix[i]: tokens of messages[:i]
    for message in messages:
        prefix.append(prefix[-1] + estimate(message))
    start = 0  # index into ``starts``
    for turn, index in enumerate(starts):
        # The prompt of that turn ran up to its user message (tool rounds extend it).
        end = prefix[index + 1]
        if end - prefix[starts[start]] <= budget_tokens:
            continue
        # The oldest start from which the prompt fits the watermark; the turn alone if none.
        start = _oldest_within(starts, prefix, end, watermark, turn)
    return list(messages[starts[start] :])


def _oldest_within(
    starts: Sequence[int], prefix: Sequence[int], end: int, limit: int, last: int
) -> int:
    """The first of ``starts[:last]`` from which ``end`` is within ``limit``, else ``last``.

    The distance to ``end`` shrinks as the start moves on, so a binary search finds it.
    """
    low, high = 0, last
    while low < high:
        middle = (low + high) // 2
        if end - prefix[starts[middle]] <= limit:
            high = middle
        else:
            low = middle + 1
    return low


# Between the texts of two merged turns: a paragraph break, so the model reads two
# messages, not one glued sentence ("What is 17*23?Tell me a story").
TURN_SEPARATOR = "\n\n"


def merge_consecutive(messages: Sequence[Message]) -> list[Message]:
    """Merge neighbours with the same role into one message, keeping block order.

    Stored history can hold two user turns in a row (a failed turn left no
    assistant reply), which providers reject. Messages without content (a
    turn cancelled before any output) are dropped first, so their neighbours
    merge too. Where a text block meets a text block across the seam they
    become one block with ``TURN_SEPARATOR`` between them: providers (and the
    Anthropic API itself) join adjacent text blocks with nothing.
    """
    merged: list[Message] = []
    for message in messages:
        if not message.content:
            continue
        if merged and merged[-1].role == message.role:
            previous = merged[-1]
            merged[-1] = Message(
                role=previous.role, content=_join(previous.content, message.content)
            )
        else:
            merged.append(message)
    return merged


def _join(first: Sequence[Block], second: Sequence[Block]) -> tuple[Block, ...]:
    head, tail = first[-1], second[0]
    if isinstance(head, TextBlock) and isinstance(tail, TextBlock):
        seam = TextBlock(f"{head.text}{TURN_SEPARATOR}{tail.text}")
        return (*first[:-1], seam, *second[1:])
    return (*first, *second)
