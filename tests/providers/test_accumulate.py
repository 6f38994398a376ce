"""The fold of provider events into the final assistant turn."""

from __future__ import annotations

import pytest

from service.content import Usage
from service.providers.accumulate import accumulate, afold, fold
from service.providers.base import AssistantTurn, ProviderEvent, Stop, TextDelta, ToolCall


def test_fold_collects_text_tool_calls_usage_and_stop() -> None:
    call = ToolCall("c1", "calc", {"e": "1+1"})
    turn = fold(
        [
            TextDelta("Let me "),
            TextDelta("check."),
            call,
            Usage(3, 1),
            Usage(3, 9),
            Stop("tool_use"),
        ]
    )
    assert turn.text == "Let me check."
    assert turn.tool_calls == [call]
    assert turn.usage == Usage(3, 9)  # cumulative: the last report wins
    assert turn.stop_reason == "tool_use"


def test_accumulate_updates_in_place_and_returns_the_turn() -> None:
    turn = AssistantTurn()
    assert accumulate(turn, TextDelta("a")) is turn
    assert turn.text_parts == ["a"]


@pytest.mark.parametrize(
    "late", [TextDelta("x"), ToolCall("c", "t", {}), Usage(1, 1), Stop("end_turn")]
)
def test_any_event_after_stop_is_rejected(late: ProviderEvent) -> None:
    turn = fold([TextDelta("done"), Stop("end_turn")])
    with pytest.raises(ValueError, match="after Stop"):
        accumulate(turn, late)
    assert turn.text == "done"


def test_a_repeated_tool_call_id_is_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        fold([ToolCall("c1", "a", {}), ToolCall("c1", "b", {})])


def test_an_unfinished_stream_has_no_stop_reason() -> None:
    assert fold([TextDelta("partial")]).stop_reason is None


async def test_afold_consumes_an_async_stream() -> None:
    async def events():  # type: ignore[no-untyped-def]
        yield TextDelta("hi")
        yield Stop("max_tokens")

    turn = await afold(events())
    assert (turn.text, turn.stop_reason) == ("hi", "max_tokens")
