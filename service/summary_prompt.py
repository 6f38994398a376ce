"""The model request that summarizes a conversation's dropped history: pure, no I/O.

A summary request is not a turn: its one user message holds the summary so far
(if any) and the messages to fold in, written out as a plain transcript. Tool
calls and results become lines of that transcript, so the request has none of
the pairing rules of a turn and any run of messages can be summarized.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from service.content import Message, TextBlock, ToolUseBlock
from service.providers.base import CompletionRequest
from service.store.base import StoredMessage

_SPEAKERS = {"user": "User", "assistant": "Assistant"}


def transcript(messages: Sequence[Message]) -> str:
    """The messages as a plain-text transcript, one paragraph per block."""
    lines: list[str] = []
    for message in messages:
        speaker = _SPEAKERS[message.role]
        for block in message.content:
            if isinstance(block, TextBlock):
                if block.text.strip():
                    lines.append(f"{speaker}: {block.text}")
            elif isinstance(block, ToolUseBlock):
                arguments = json.dumps(block.input, ensure_ascii=False, default=str)
                lines.append(f"{speaker} called the tool {block.name} with {arguments}")
            else:
                outcome = "failed" if block.is_error else "returned"
                tool = block.name or block.tool_use_id
                lines.append(f"The tool {tool} {outcome}: {block.content}")
    return "\n\n".join(lines)


def summary_request(
    instruction: str,
    previous: str,
    messages: Sequence[Message],
    *,
    model: str,
    user_id: str,
    max_tokens: int,
) -> CompletionRequest:
    """The request that folds ``messages`` into the summary ``previous`` ("" for none).

    Not cacheable: no later request starts with this one's prompt.
    """
    parts = []
    if previous:
        parts.append(f"The summary so far:\n{previous}")
    since = " since then" if previous else ""
    parts.append(f"The conversation{since}:\n{transcript(messages)}")
    return CompletionRequest(
        messages=[Message("user", [TextBlock("\n\n".join(parts))])],
        system=instruction,
        max_tokens=max_tokens,
        model=model,
        user_id=user_id,
        cacheable=False,
    )


def next_chunk(rows: Sequence[StoredMessage], budget_tokens: int) -> list[StoredMessage]:
    """The oldest of ``rows`` whose estimates fit ``budget_tokens``, at least one.

    A long stretch of history is folded in chunks of a prompt's size, oldest first,
    so no summary request is larger than a turn's.
    """
    chunk: list[StoredMessage] = []
    total = 0
    for row in rows:
        total += row.estimated_tokens
        if chunk and total > budget_tokens:
            break
        chunk.append(row)
    return chunk


def storable(text: str) -> str:
    """Model output as a store keeps it: no NUL, no lone surrogates, no outer blanks."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()
