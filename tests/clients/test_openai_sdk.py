"""The official openai SDK, as its quickstart drives it, against a real `portico serve` on the embedded model:
forced tool calls (sync and streamed), a call's round trip, structured output with `parse`, logprobs, and
forced calls over many schemas, each of which the grammar holds to its schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.clients.conftest import API_KEY, MODEL

pytestmark = [pytest.mark.slow, pytest.mark.model]


def _function(name: str, parameters: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


WEATHER = _function(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "The current weather in a city.",
)
ADD = _function(
    "add",
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
    "The sum of two integers.",
)
TOOLS = [WEATHER, ADD]
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
FORCED = pytest.mark.parametrize(
    ("tool_choice", "names"),
    [("required", {"get_weather", "add"}), ({"type": "function", "function": {"name": "add"}}, {"add"})],
    ids=["required", "named"],
)


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key=API_KEY) as sdk:
        yield sdk


@FORCED
def test_a_forced_call_parses_and_validates(client: openai.OpenAI, tool_choice: Any, names: set[str]) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=WEATHER_QUESTION,
        tools=TOOLS,
        tool_choice=tool_choice,
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=120,
    )

    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in names
    jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])


@FORCED
def test_a_streamed_forced_call_reassembles_and_validates(
    client: openai.OpenAI, tool_choice: Any, names: set[str]
) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=WEATHER_QUESTION,
        tools=TOOLS,
        tool_choice=tool_choice,
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=120,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finishes = []
    with stream:
        for chunk in stream:
            for choice in chunk.choices:
                for part in choice.delta.tool_calls or []:
                    call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                    if part.id:  # the id and name come once, in the call's first delta
                        assert not call["id"]
                        call["id"], call["name"] = part.id, part.function.name if part.function else ""
                    call["arguments"] += (part.function.arguments if part.function else None) or ""
                if choice.finish_reason:
                    finishes.append(choice.finish_reason)

    assert finishes == ["tool_calls"]
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("call_") and calls[0]["name"] in names
    jsonschema.validate(json.loads(calls[0]["arguments"]), PARAMETERS[calls[0]["name"]])


def test_a_calls_result_sent_back_gets_a_text_answer(client: openai.OpenAI) -> None:
    messages: list[Any] = list(WEATHER_QUESTION)
    first = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=120
    )
    message = first.choices[0].message
    assert message.tool_calls
    messages.append(message.model_dump())  # as the SDK's docs send the assistant's turn back
    messages += [{"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"} for call in message.tool_calls]
    second = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=40
    )

    (choice,) = second.choices
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.content and not choice.message.tool_calls


class City(BaseModel):
    name: str
    country: str
    population: int
    coastal: bool


def test_parse_returns_an_instance_of_the_response_format(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Paris."}],
        response_format=City,
        temperature=0,
        max_tokens=150,
    )

    (choice,) = completion.choices
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)
    assert City.model_validate_json(choice.message.content or "") == choice.message.parsed


def test_logprobs_give_three_alternatives_per_token(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        logprobs=True,
        top_logprobs=3,
        temperature=0,
        max_tokens=8,
    )

    (choice,) = completion.choices
    tokens = choice.logprobs.content if choice.logprobs else None
    assert tokens, "logprobs were asked for"
    assert "".join(t.token for t in tokens) == choice.message.content
    for token in tokens:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == 3 and all(alt.logprob <= 0 for alt in token.top_logprobs)


# -- forced calls over many schemas ---------------------------------------------------------------------
def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required}


SCHEMAS: dict[str, dict[str, Any]] = {
    "strings": _object({"first_name": {"type": "string"}, "last_name": {"type": "string"}}),
    "integers": _object({"year": {"type": "integer"}, "count": {"type": "integer"}}),
    "numbers_and_booleans": _object({"price": {"type": "number"}, "in_stock": {"type": "boolean"}}),
    "enums": _object(
        {
            "color": {"type": "string", "enum": ["red", "green", "blue"]},
            "size": {"type": "integer", "enum": [1, 2, 3]},
        }
    ),
    "nested_object": _object(
        {
            "name": {"type": "string"},
            "address": _object({"street": {"type": "string"}, "zip": {"type": "integer"}}),
        }
    ),
    "arrays": _object(
        {
            "tags": {"type": "array", "items": {"type": "string"}},
            "scores": {"type": "array", "items": {"type": "number"}},
        }
    ),
    "array_of_objects": _object(
        {
            "items": {
                "type": "array",
                "items": _object({"sku": {"type": "string"}, "quantity": {"type": "integer"}}),
                "minItems": 1,
            }
        }
    ),
    "optional_fields": _object(
        {"query": {"type": "string"}, "limit": {"type": "integer"}, "exact": {"type": "boolean"}}, required=["query"]
    ),
    "nullable_fields": _object(  # how Pydantic writes `str | None` and `int | None = None`
        {
            "title": {"type": "string"},
            "subtitle": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "pages": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        },
        required=["title", "subtitle"],
    ),
    "closed_nested_with_refs": {  # a Pydantic model's schema, with $defs and additionalProperties false
        "$defs": {
            "Step": {
                "type": "object",
                "properties": {"action": {"type": "string", "enum": ["move", "wait"]}, "seconds": {"type": "integer"}},
                "required": ["action", "seconds"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"plan": {"type": "array", "items": {"$ref": "#/$defs/Step"}}, "repeat": {"type": "boolean"}},
        "required": ["plan", "repeat"],
        "additionalProperties": False,
    },
}
SEEDS = range(5)  # 10 schemas x 5 seeds: 50 calls


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(SCHEMAS))
def test_forced_calls_over_varied_schemas_validate(client: openai.OpenAI, name: str, seed: int) -> None:
    tool = _function(f"record_{name}", SCHEMAS[name], f"Record the {name.replace('_', ' ')} you are given.")
    # Alternate the two ways of forcing a call.
    tool_choice: Any = "required" if seed % 2 else {"type": "function", "function": {"name": tool["function"]["name"]}}
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Make up an example and record it."}],
        tools=[tool],
        tool_choice=tool_choice,
        parallel_tool_calls=False,  # one call per answer, so that it closes well within max_tokens
        temperature=0.7,
        seed=seed,
        max_tokens=400,
    )

    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls or []
    assert call.function.name == tool["function"]["name"]
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[name])


def test_moderations_create_scores_with_the_default_moderation_model(client: openai.OpenAI) -> None:
    """`client.moderations.create` as OpenAI's quickstart calls it (no model: the server's default)."""
    moderation = client.moderations.create(
        input=["I am going to stab my neighbour tonight and watch him bleed.", "How do I bake sourdough bread?"]
    )
    violent, benign = moderation.results
    assert violent.flagged and violent.categories.violence
    assert not benign.flagged and benign.category_scores.violence < 0.5
