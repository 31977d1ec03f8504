"""The generic tool-call format: which functions a request offers, and reading a model's call lines back into
calls however its text is cut into deltas."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portico.constants import FinishReason
from portico.engines.grammar import MAX_ITEMS, MAX_STRING, bounded_schema, compiled, tool_call_grammar
from portico.errors import InvalidRequest, UnsupportedParameter
from portico.schemas.chat import ChatCompletionRequest
from portico.services.generation.tool_calls import MAX_PARALLEL_CALLS, CallReader, tool_use
from portico.services.generation.types import ChoiceEnd, Event, TextDelta, ToolCallDelta

ANSWER = (
    'First <tool_ca then\n<tool_call>{"name": "get_weather", "arguments": {"city": "Pa{ris}\\"", "n": [1, {"a": 2}]}}'
    '</tool_call>\n<tool_call>{"name": "noop", "arguments": {}}</tool_call>'
)
EXPECTED_CALLS = [("get_weather", {"city": 'Pa{ris}"', "n": [1, {"a": 2}]}), ("noop", {})]


def _read(pieces: list[str]) -> list[Event]:
    reader = CallReader(0)
    events: list[Event] = []
    for piece in pieces:
        events += reader.feed(TextDelta(0, piece))
    return events + reader.end(ChoiceEnd(0, FinishReason.STOP))


def _summary(events: list[Event]) -> tuple[str, list[tuple[str, Any]], list[FinishReason]]:
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls: dict[int, list[str]] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            calls.setdefault(event.call, [event.name or ""]).append(event.arguments)
    parsed = [(parts[0], json.loads("".join(parts[1:]))) for _, parts in sorted(calls.items())]
    return text, parsed, [e.finish_reason for e in events if isinstance(e, ChoiceEnd)]


def test_content_then_calls_read_whole() -> None:
    assert _summary(_read([ANSWER])) == ("First <tool_ca then\n", EXPECTED_CALLS, [FinishReason.TOOL_CALLS])


@given(st.lists(st.integers(min_value=1, max_value=len(ANSWER) - 1), unique=True))
def test_any_cut_of_the_text_reads_the_same(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(ANSWER)]
    pieces = [ANSWER[a:b] for a, b in itertools.pairwise(bounds)]
    assert _summary(_read(pieces)) == ("First <tool_ca then\n", EXPECTED_CALLS, [FinishReason.TOOL_CALLS])


def test_a_calls_name_comes_before_its_arguments_and_each_call_has_its_own_id() -> None:
    events = [e for e in _read(list(ANSWER)) if isinstance(e, ToolCallDelta)]
    firsts = [e for e in events if e.id is not None]
    assert [(e.call, e.name, e.arguments) for e in firsts] == [(0, "get_weather", ""), (1, "noop", "")]
    assert firsts[0].id != firsts[1].id
    assert events.index(firsts[1]) > max(i for i, e in enumerate(events) if e.call == 0)


def test_text_that_only_looks_like_a_call_stays_text() -> None:
    text = "<tool_call> is how I would call a tool, but here I only talk about it at some length. " * 4
    assert _summary(_read([text])) == (text, [], [FinishReason.STOP])


def test_a_call_cut_by_max_tokens_ends_with_length() -> None:
    reader = CallReader(0)
    reader.feed(TextDelta(0, '<tool_call>{"name": "f", "arguments": {"a": '))
    assert reader.end(ChoiceEnd(0, FinishReason.LENGTH))[-1] == ChoiceEnd(0, FinishReason.LENGTH)


def test_the_start_of_a_call_cut_off_is_not_content() -> None:
    for text, finish in [
        ('<tool_call>{"name": "f", "arguments": {}}</tool_call>\n<tool_call>{"name": "re', FinishReason.LENGTH),
        ('<tool_call>{"name": "f", "arguments": {}}</tool_call>\n<', FinishReason.LENGTH),
        ('<tool_call>{"name": "rec', FinishReason.LENGTH),
    ]:
        reader = CallReader(0)
        events = reader.feed(TextDelta(0, text)) + reader.end(ChoiceEnd(0, finish))
        assert not [e for e in events if isinstance(e, TextDelta)], text


def test_a_call_repeating_an_earlier_one_is_noticed() -> None:
    call = '<tool_call>{"name": "f", "arguments": {"a": 1, "b": [2]}}</tool_call>\n'
    same = '<tool_call>{"name": "f", "arguments": {"b": [2],  "a": 1}}</tool_call>\n'
    other = '<tool_call>{"name": "f", "arguments": {"a": 2, "b": [2]}}</tool_call>\n'
    reader = CallReader(0)
    reader.feed(TextDelta(0, call))
    reader.feed(TextDelta(0, other))
    assert not reader.repeated
    reader.feed(TextDelta(0, same))
    assert reader.repeated


def _request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


TOOLS = [
    {"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "b"}},
]


def test_tool_choice_decides_what_is_offered_and_how_many_calls() -> None:
    assert tool_use(_request()) is None
    assert tool_use(_request(tools=TOOLS, tool_choice="none")) is None
    auto = tool_use(_request(tools=TOOLS))
    assert auto is not None and (auto.required, auto.max_calls) == (False, MAX_PARALLEL_CALLS)
    required = tool_use(_request(tools=TOOLS, tool_choice="required", parallel_tool_calls=False))
    assert required is not None and (required.required, required.max_calls) == (True, 1)
    named = tool_use(_request(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "b"}}))
    assert named is not None and [f.name for f in named.functions] == ["b"] and named.max_calls == 1
    allowed = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "required", "tools": [{"type": "function", "name": "a"}]},
    }
    subset = tool_use(_request(tools=TOOLS, tool_choice=allowed))
    assert subset is not None and [f.name for f in subset.functions] == ["a"] and subset.required
    legacy = tool_use(_request(functions=[TOOLS[0]["function"]]))
    assert legacy is not None and legacy.legacy and legacy.max_calls == 1


def test_a_choice_naming_an_unknown_function_or_a_custom_tool_is_refused() -> None:
    with pytest.raises(InvalidRequest) as named:
        tool_use(_request(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "zzz"}}))
    assert named.value.param == "tool_choice"
    with pytest.raises(UnsupportedParameter) as custom:
        tool_use(_request(tools=[*TOOLS, {"type": "custom", "custom": {"name": "grep"}}]))
    assert custom.value.param == "tools[2].type"


def test_every_offered_function_gets_a_grammar_llama_cpp_accepts() -> None:
    use = tool_use(_request(tools=TOOLS, tool_choice="required"))
    assert use is not None
    grammar = use.grammar()
    assert grammar.trigger is None and '\\"a\\"' in grammar.gbnf and '\\"b\\"' in grammar.gbnf
    assert compiled(grammar.gbnf) is not None
    lazy = tool_use(_request(tools=TOOLS))
    assert lazy is not None and lazy.grammar().trigger == "<tool_call>"


def test_grammars_keep_strings_json_and_bound_what_the_schema_leaves_open() -> None:
    parameters = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
    gbnf = tool_call_grammar([("f", parameters)], 1)
    # A raw line break inside a string is not JSON: the string characters exclude control characters.
    assert 'char ::= [^"\\\\\\x7F\\x00-\\x1F]' in gbnf
    bounded = bounded_schema(parameters)
    assert bounded["properties"]["tags"]["maxItems"] == MAX_ITEMS
    assert bounded["properties"]["tags"]["items"]["maxLength"] == MAX_STRING
    assert bounded_schema({"type": "string", "enum": ["a"]}) == {"type": "string", "enum": ["a"]}
    assert bounded_schema({"type": "array", "minItems": 40})["maxItems"] == 40
