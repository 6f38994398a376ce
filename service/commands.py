"""Commands: messages starting with "/" are answered without the model."""

from __future__ import annotations

from dataclasses import dataclass

from service.limits import Limits, LimitsReport
from service.profiles import ProfileDirectory
from service.store.base import Conversation, ConversationStore

HELP = """Commands:
/help         show this list
/new          start a new conversation
/clear        empty this conversation's history
/reload_user  re-read your profile (display name, system prompt additions)
/usage        your token totals, spend, budgets left and limits
Anything else is sent to the model."""


@dataclass(frozen=True, slots=True)
class CommandReply:
    """A command's answer and the conversation it concerns."""

    text: str
    conversation_id: str


class Commands:
    """Answers the slash commands of one service."""

    def __init__(
        self, store: ConversationStore, profiles: ProfileDirectory, limits: Limits
    ) -> None:
        self._store = store
        self._profiles = profiles
        self._limits = limits

    @staticmethod
    def is_command(message: str) -> bool:
        return message.lstrip().startswith("/")

    async def run(
        self, user_id: str, message: str, conversation: Conversation | None
    ) -> CommandReply:
        """Run one command; ``conversation`` is the one the request addressed, if any."""
        name = message.strip().split(maxsplit=1)[0].lower()
        conv_id = conversation.id if conversation else ""
        if name == "/help":
            return CommandReply(HELP, conv_id)
        if name == "/new":
            fresh = await self._store.create_conversation(user_id)
            return CommandReply("Started a new conversation.", fresh.id)
        if name == "/clear":
            if conversation is None:
                return CommandReply("There is no conversation to clear.", "")
            removed = await self._store.clear_conversation(user_id, conversation.id)
            return CommandReply(f"Cleared {removed} message(s) from this conversation.", conv_id)
        if name == "/reload_user":
            profile = await self._profiles.reload(user_id)
            extra = "with" if profile.system_prompt else "without"
            return CommandReply(
                f"Profile reloaded: {profile.display_name} ({extra} system prompt additions).",
                conv_id,
            )
        if name == "/usage":
            totals = await self._store.usage_totals(user_id)
            report = await self._limits.report(user_id)
            return CommandReply(
                f"Token usage for {user_id}: {totals.input_tokens} input, "
                f"{totals.output_tokens} output, {totals.cache_read_input_tokens} read from "
                f"the prompt cache, {totals.cache_creation_input_tokens} written to it, "
                f"over {totals.turns} answer(s).\n" + describe_limits(report),
                conv_id,
            )
        return CommandReply(f"Unknown command {name}.\n\n{HELP}", conv_id)


def describe_limits(report: LimitsReport) -> str:
    """Spend, what is left of each budget, and the limits that apply, in words."""
    limits = report.limits

    def cap(value: int, unit: str = "") -> str:
        return f"{value}{unit}" if value else "unlimited"

    def left(value: int | None) -> str:
        return "no budget" if value is None else f"{value} left"

    tier = f"tier {limits.tier}" if limits.tier else "default limits"
    return (
        f"Spent today (UTC): {report.spent_today} tokens ({left(report.left_today)}); "
        f"this month: {report.spent_this_month} tokens ({left(report.left_this_month)}).\n"
        f"Limits ({tier}): requests_per_minute {cap(limits.requests_per_minute)}, "
        f"max_active {cap(limits.max_active)}, tokens_per_day {cap(limits.tokens_per_day)}, "
        f"tokens_per_month {cap(limits.tokens_per_month)}, "
        f"max_output_tokens {cap(limits.max_output_tokens)}."
    )
