"""The demo backend's answers: an echo, and markers in the message that show the rest.

``make demo`` runs the fake Ollama with this responder, so every endpoint can
be tried without a model: put a marker anywhere in a message.

- no marker: echoes the message in three chunks (``echo: ...``);
- ``#tool``: calls the calculator on the first arithmetic in the message
  (else ``6*7``), then says what it answered: ``tool_call`` / ``tool_result``
  events, ``tool_calls`` in the answer;
- ``#slow``: one chunk a second for ten seconds, holding the slot, so other
  requests queue (``queued`` events, ``/api/queue``);
- ``#busy``: a 503 "server busy": 503 ``PROVIDER_OVERLOADED`` with Retry-After;
- ``#fail``: breaks off after two chunks: the stream's one ``error`` event;
- ``#unreachable``: closes the connection before the answer's end:
  503 ``PROVIDER_STREAM_BROKEN``.
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.http import RecordedRequest
from tests.fakes.script import Reply, echo_chunks

_ARITHMETIC = re.compile(r"\d+(?:\.\d+)?(?:\s*[-+*/]\s*\d+(?:\.\d+)?)+")
MARKERS = ("#tool", "#slow", "#busy", "#fail", "#unreachable")


def _last(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or [{}]
    last: dict[str, Any] = messages[-1]
    return last


def _asked(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def demo_reply(request: RecordedRequest, *, chunk_delay_s: float = 0.02) -> Reply:
    """The reply to one /api/chat request of the demo."""
    body: dict[str, Any] = request.json
    last = _last(body)
    if last.get("role") == "tool":  # the second round of #tool: say what the tool answered
        return Reply.text(f"The calculator says {last.get('content', '')}.")
    text = _asked(body)
    if "#tool" in text:
        found = _ARITHMETIC.search(text)
        expression = found.group(0).replace(" ", "") if found else "6*7"
        return Reply.tool("calculator", {"expression": expression})
    if "#busy" in text:
        return Reply(status=503, error_message="server busy, please try again")
    if "#fail" in text:
        return Reply.text("This", " answer", " breaks", fail_after=2)
    if "#unreachable" in text:
        return Reply.text("never sent", truncate_after=0)
    if "#slow" in text:
        return Reply(chunks=tuple(f" {n}" for n in range(1, 11)), chunk_delay_s=1.0)
    return Reply(chunks=echo_chunks(f"echo: {text}"), chunk_delay_s=chunk_delay_s)
