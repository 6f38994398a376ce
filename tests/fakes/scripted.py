"""What both provider fakes share: a script of replies and the record of chat calls."""

from __future__ import annotations

from typing import Any

from tests.fakes.script import Reply, Responder, Script, echo_chunks
from tests.fakes.server import LoopbackServer, RecordedRequest


class ScriptedFake(LoopbackServer):
    """Answers chat calls from queued replies, else from ``responder`` (default: echo)."""

    chat_path = ""

    def __init__(self, *, chunk_delay_s: float, host: str, port: int) -> None:
        super().__init__(host=host, port=port)
        self.chunk_delay_s = chunk_delay_s
        self.script = Script(self.echo)

    def push(self, *replies: Reply | Responder) -> None:
        self.script.push(*replies)

    @property
    def responder(self) -> Responder:
        return self.script.responder

    @responder.setter
    def responder(self, responder: Responder) -> None:
        self.script.responder = responder

    def last_user_text(self, body: dict[str, Any]) -> str:
        raise NotImplementedError

    def echo(self, request: RecordedRequest) -> Reply:
        """The default reply: "echo: <last user message>" in a few chunks."""
        text = f"echo: {self.last_user_text(request.json)}"
        return Reply(chunks=echo_chunks(text), chunk_delay_s=self.chunk_delay_s)

    @property
    def chats(self) -> list[RecordedRequest]:
        return self.calls(self.chat_path)
