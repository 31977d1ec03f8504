"""The context-window rules: what the model sees of a conversation and which oldest turns go first."""

from __future__ import annotations

from portico.services.context_window import SUMMARY_HEADING, chat_messages, droppable_units, tail, units_to_free
from portico.storage.resources import ConversationMessage


def message(role: str, content: str, tokens: int = 3) -> ConversationMessage:
    return ConversationMessage(id=f"msg_{role}_{content}", role=role, content=content, tokens=tokens, in_context=True)


def test_the_summary_rides_in_the_system_prompt_and_the_history_keeps_its_order() -> None:
    context = [message("summary", "they met"), message("user", "u1"), message("assistant", "a1")]
    messages = chat_messages("Be kind.", context, "u2")
    assert [(m.role, m.content) for m in messages] == [
        ("system", f"Be kind.\n\n{SUMMARY_HEADING}\nthey met"),
        ("user", "u1"),
        ("assistant", "a1"),
        ("user", "u2"),
    ]
    assert [m.role for m in chat_messages(None, [], "hi")] == ["user"]  # no empty system message


def test_turns_are_dropped_as_whole_user_assistant_pairs_oldest_first() -> None:
    context = [
        message("summary", "s"),
        message("user", "u1", tokens=5),
        message("assistant", "a1", tokens=5),
        message("user", "u2", tokens=2),
        message("assistant", "a2", tokens=2),
        message("user", "lonely", tokens=1),  # an answer that was never stored
    ]
    units = droppable_units(context)
    assert [[m.content for m in unit] for unit in units] == [["u1", "a1"], ["u2", "a2"], ["lonely"]]
    assert units_to_free(units, need=10, overhead=0) == 1
    assert units_to_free(units, need=11, overhead=0) == 2
    assert units_to_free(units, need=11, overhead=1) == 1  # the template's tokens around each message count
    assert units_to_free(units, need=1000, overhead=0) == 3


def test_a_transcript_too_long_keeps_its_newest_part_from_a_line_or_word_boundary() -> None:
    text = "User: first line\nAssistant: second line"
    assert tail(text, 100) == text
    assert tail(text, 20) == "second line"  # "sistant: second line" cut at its first space
    assert tail(text, 25) == "Assistant: second line"
    assert tail(text, 0) == ""
