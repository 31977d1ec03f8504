"""The Responses API as its clients use it, against a real `portico serve` on the embedded SmolLM2-135M: the
openai SDK's `responses.create` / `stream` / `parse` (function tools, structured output, previous_response_id,
background; test_openai_agents.py drives the Agents SDK on it)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import jsonschema
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.clients.conftest import API_KEY, MODEL

pytestmark = [pytest.mark.slow, pytest.mark.model]

BOOKING = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "nights": {"type": "integer"},
        "room": {"type": "string", "enum": ["single", "double", "suite"]},
    },
    "required": ["city", "nights", "room"],
    "additionalProperties": False,
}
BOOK = {"type": "function", "name": "book_hotel", "description": "Book a hotel room.", "parameters": BOOKING}


class Weather(BaseModel):
    city: str
    temperature_c: int
    sunny: bool


@pytest.fixture
def client(base_url: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


def test_a_forced_function_call_validates_sync_and_streamed(client: OpenAI) -> None:
    ask = {"model": MODEL, "input": "Book me two nights in Rome.", "tools": [BOOK], "tool_choice": "required"}
    called = client.responses.create(**ask, temperature=0, max_output_tokens=120)  # type: ignore[arg-type]
    events = list(client.responses.create(**ask, temperature=0.8, max_output_tokens=120, stream=True))  # type: ignore[call-overload]

    calls = [item for item in called.output if item.type == "function_call"]
    assert calls and all(call.name == "book_hotel" for call in calls)
    for call in calls:
        jsonschema.validate(json.loads(call.arguments), BOOKING)
    streamed: dict[str, str] = {}
    for event in events:
        if event.type == "response.function_call_arguments.delta":
            streamed[event.item_id] = streamed.get(event.item_id, "") + event.delta
    assert streamed
    for arguments in streamed.values():
        jsonschema.validate(json.loads(arguments), BOOKING)
    assert events[-1].type == "response.completed"


def test_parse_returns_the_structured_output(client: OpenAI) -> None:
    parsed = client.responses.parse(
        model=MODEL,
        input="The weather in Paris is 18 C and sunny.",
        text_format=Weather,
        temperature=0,
        max_output_tokens=100,
    )

    assert isinstance(parsed.output_parsed, Weather)


def test_a_conversation_continues_and_a_background_response_completes(client: OpenAI) -> None:
    first = client.responses.create(
        model=MODEL, input="What is the capital of France? Answer in one word.", temperature=0, max_output_tokens=30
    )
    second = client.responses.create(
        model=MODEL, input="And what is its population?", previous_response_id=first.id, max_output_tokens=30
    )
    queued = client.responses.create(model=MODEL, input="Say hello.", background=True, max_output_tokens=20)
    deadline = time.monotonic() + 120
    while (done := client.responses.retrieve(queued.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.2)

    assert "Paris" in first.output_text
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert queued.status == "queued" and done.status in ("completed", "incomplete") and done.output_text
