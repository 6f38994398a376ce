"""Reading the part of a conversation that a turn's stepped history window can start in.

``history.stepped_window`` replays the window's cuts from the start of the
conversation. Replaying from any message where the window once started gives
the same result (no cut happens before the turn that made it the start, since
the prompt from there was within the watermark), so a turn only needs the
messages from where the previous prompt began. ``HistoryReader`` remembers
that message per conversation and reads from it; without it (a restart,
another replica's conversation, a memory that overflowed) it reads the whole
conversation once. What it remembers is never wrong, only sometimes older
than it could be: starts only move forward, and a start that was cleared
away leaves exactly the messages stored after it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from service.content import Message
from service.store.base import ConversationStore, StoredMessage
from service.store.rows import MAX_PAGE_SIZE
from service.store.window import encode_message_token

DEFAULT_REMEMBERED = 10_000


class HistoryReader:
    """Reads a turn's history from the store, starting where the last window started."""

    def __init__(self, store: ConversationStore, *, remembered: int = DEFAULT_REMEMBERED) -> None:
        self._store = store
        self._remembered = remembered
        self._starts: OrderedDict[str, int] = OrderedDict()  # conversation -> message id

    async def read(self, user_id: str, conversation_id: str) -> list[StoredMessage]:
        """The conversation's messages from its window's last known start, oldest first."""
        start = self._starts.get(conversation_id)
        if start is None:
            return await self._store.messages(user_id, conversation_id)
        self._starts.move_to_end(conversation_id)
        messages: list[StoredMessage] = []
        # Pages begin after a message id; the remembered start itself is wanted.
        token = encode_message_token(conversation_id, start - 1) if start > 1 else ""
        while True:
            page, token = await self._store.messages_page(
                user_id, conversation_id, MAX_PAGE_SIZE, token
            )
            messages.extend(page)
            if not token:
                return messages

    def remember(
        self,
        conversation_id: str,
        stored: Sequence[StoredMessage],
        history: Sequence[Message],
        prompt: Sequence[Message],
    ) -> None:
        """Note where ``prompt`` starts, if that is a stored message.

        ``history`` holds the messages built from ``stored``, one for one. A
        prompt that begins with a merged message or with the new turn is not
        noted: the previous start stays, which is still correct.
        """
        if not prompt:
            return
        first = prompt[0]
        for message, row in zip(history, stored, strict=True):
            if message is first:
                self._starts[conversation_id] = row.id
                self._starts.move_to_end(conversation_id)
                break
        while len(self._starts) > self._remembered:
            self._starts.popitem(last=False)
