"""The `anthropic` SDK, as its quickstart drives it, against a real `portico serve` on the embedded SmolLM2-135M:
a message, a streamed message, and a forced tool use whose input validates against the tool's schema."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import jsonschema
import pytest

from tests.clients.conftest import API_KEY, MODEL

pytestmark = [pytest.mark.slow, pytest.mark.model]

BOOKING = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "nights": {"type": "integer"}},
    "required": ["city", "nights"],
}


@pytest.fixture
def client(base_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


def test_a_message_sync_and_streamed(client: anthropic.Anthropic) -> None:
    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    greedy = {"temperature": 0}  # this SDK version takes no temperature argument; the API does
    message = client.messages.create(model=MODEL, max_tokens=20, messages=question, extra_body=greedy)  # type: ignore[arg-type]
    with client.messages.stream(model=MODEL, max_tokens=20, messages=question, extra_body=greedy) as stream:  # type: ignore[arg-type]
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert message.content[0].type == "text" and "Paris" in message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert "Paris" in "".join(pieces) and len(pieces) > 1
    assert final.stop_reason in ("end_turn", "max_tokens")


def test_a_forced_tool_use_has_valid_input(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "Book two nights in Rome."}],
        tools=[{"name": "book_hotel", "description": "Book a hotel room.", "input_schema": BOOKING}],
        tool_choice={"type": "any"},
    )

    uses = [block for block in message.content if block.type == "tool_use"]
    assert uses and message.stop_reason == "tool_use"
    for use in uses:
        assert use.name == "book_hotel"
        jsonschema.validate(use.input, BOOKING)
