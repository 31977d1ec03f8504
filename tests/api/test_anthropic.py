"""/v1/messages through the official anthropic SDK, on the echo engine (which answers with the last user turn,
so a user message written as a call comes back as the model's call, and a tool result as text)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
from anthropic.types import ImageBlockParam, MessageParam, ToolParam

from portico.constants import FinishReason
from portico.engines.base import Generation, GenerationRequest
from portico.engines.echo import EchoEngine
from portico.errors import EngineError
from tests.conftest import ECHO_ALIAS, ECHO_SNAPSHOT, asgi_client, auth_settings, echo_settings, make_key

WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL_TEXT = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


@dataclass
class Served:
    sdk: anthropic.AsyncAnthropic
    http: httpx.AsyncClient  # the same app, for the chat endpoint


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with asgi_client(echo_settings()) as (http, app):
        # The SDK runs on httpx2 (httpx's successor), so its client gets its own transport into the same app.
        transport = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test")
        sdk = anthropic.AsyncAnthropic(base_url="http://test", api_key="k", http_client=transport, max_retries=0)
        async with sdk:
            yield Served(sdk, http)


def _user(content: str) -> list[MessageParam]:
    return [{"role": "user", "content": content}]


async def test_a_text_answer_sync_and_streamed(served: Served) -> None:
    raw = await served.sdk.messages.with_raw_response.create(
        model=ECHO_ALIAS, max_tokens=64, messages=_user("Hello there, Portico")
    )
    async with served.sdk.messages.stream(
        model=ECHO_ALIAS, max_tokens=64, messages=_user("Hello there, Portico")
    ) as stream:
        streamed = "".join([text async for text in stream.text_stream])
        final = await stream.get_final_message()

    message = await raw.parse()
    assert message.id.startswith("msg_") and message.model == ECHO_SNAPSHOT and message.role == "assistant"
    assert [(block.type, getattr(block, "text", None)) for block in message.content] == [
        ("text", "Hello there, Portico")
    ]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == 3 and message.usage.input_tokens > 0
    assert raw.headers["x-served-by"] and raw.headers["x-cache-status"]
    assert streamed == "Hello there, Portico"
    assert final.stop_reason == "end_turn" and final.id.startswith("msg_")
    assert (final.usage.input_tokens, final.usage.output_tokens) == (message.usage.input_tokens, 3)


async def test_max_tokens_ends_the_answer_with_stop_reason_max_tokens(served: Served) -> None:
    message = await served.sdk.messages.create(model=ECHO_ALIAS, max_tokens=2, messages=_user("one two three four"))

    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2


async def test_the_system_prompt_is_the_chat_system_message(served: Served) -> None:
    chat = await served.http.post(
        "/v1/chat/completions",
        json={
            "model": ECHO_ALIAS,
            "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"}],
        },
    )
    as_text = await served.sdk.messages.create(
        model=ECHO_ALIAS, max_tokens=16, system="Answer briefly.", messages=_user("Hi")
    )
    as_blocks = await served.sdk.messages.create(
        model=ECHO_ALIAS, max_tokens=16, system=[{"type": "text", "text": "Answer briefly."}], messages=_user("Hi")
    )
    without = await served.sdk.messages.create(model=ECHO_ALIAS, max_tokens=16, messages=_user("Hi"))

    prompt_tokens = chat.json()["usage"]["prompt_tokens"]
    assert as_text.usage.input_tokens == as_blocks.usage.input_tokens == prompt_tokens
    assert without.usage.input_tokens < prompt_tokens


async def test_a_tool_use_round_trip(served: Served) -> None:
    first = await served.sdk.messages.create(
        model=ECHO_ALIAS, max_tokens=64, tools=[WEATHER], tool_choice={"type": "any"}, messages=_user(CALL_TEXT)
    )
    (call,) = first.content
    assert first.stop_reason == "tool_use"
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}

    second = await served.sdk.messages.create(
        model=ECHO_ALIAS,
        max_tokens=64,
        tools=[WEATHER],
        messages=[
            *_user(CALL_TEXT),
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C, sunny"}]},
        ],
    )
    (answer,) = second.content
    assert second.stop_reason == "end_turn"
    assert answer.type == "text" and "18 C, sunny" in answer.text


async def test_a_streamed_tool_use_arrives_as_input_json(served: Served) -> None:
    async with served.sdk.messages.stream(
        model=ECHO_ALIAS,
        max_tokens=64,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=_user(f"Let me look.\n{CALL_TEXT}"),
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()

    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["text", "tool_use"]
    text, call = final.content
    assert text.type == "text" and text.text == "Let me look.\n"
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "input_json" in kinds


async def test_count_tokens_is_the_prompt_tokens_of_the_same_chat(served: Served) -> None:
    turns: list[MessageParam] = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]},
        {"role": "user", "content": "And of Norway?"},
    ]
    chat = await served.http.post(
        "/v1/chat/completions",
        json={
            "model": ECHO_ALIAS,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of Norway?"},
            ],
        },
    )
    counted = await served.sdk.messages.count_tokens(model=ECHO_ALIAS, system="Be brief.", messages=turns)
    answered = await served.sdk.messages.create(model=ECHO_ALIAS, max_tokens=16, system="Be brief.", messages=turns)

    assert counted.input_tokens == chat.json()["usage"]["prompt_tokens"]
    assert answered.usage.input_tokens + (answered.usage.cache_read_input_tokens or 0) == counted.input_tokens


async def test_an_unknown_field_is_a_400_in_anthropics_shape(served: Served) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        await served.sdk.messages.create(
            model=ECHO_ALIAS, max_tokens=16, messages=_user("Hi"), extra_body={"frobnicate": True}
        )

    assert refused.value.status_code == 400
    body: Any = refused.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "frobnicate" in body["error"]["message"]
    assert body["request_id"] == refused.value.response.headers["x-request-id"]


async def test_a_missing_max_tokens_is_a_400(served: Served) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        # The SDK insists on max_tokens; a raw post sends the body a client in another language might.
        await served.sdk.post(
            "/v1/messages", body={"model": ECHO_ALIAS, "messages": _user("Hi")}, cast_to=httpx2.Response
        )

    body: Any = refused.value.body
    assert body["error"]["type"] == "invalid_request_error" and "max_tokens" in body["error"]["message"]


async def test_an_image_block_is_a_400_naming_it(served: Served) -> None:
    image: ImageBlockParam = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    question: list[MessageParam] = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}]
    with pytest.raises(anthropic.BadRequestError) as refused:
        await served.sdk.messages.create(model=ECHO_ALIAS, max_tokens=16, messages=question)

    body: Any = refused.value.body
    assert body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[1].type" in body["error"]["message"] and "image" in body["error"]["message"]


async def test_an_unknown_model_is_anthropics_not_found_error(served: Served) -> None:
    with pytest.raises(anthropic.NotFoundError) as refused:
        await served.sdk.messages.create(model="claude-nonexistent", max_tokens=16, messages=_user("Hi"), stream=True)

    body: Any = refused.value.body
    assert body["error"]["type"] == "not_found_error" and "claude-nonexistent" in body["error"]["message"]


async def test_a_failure_mid_stream_is_an_error_event(monkeypatch: pytest.MonkeyPatch, served: Served) -> None:
    async def emit(self: EchoEngine, request: GenerationRequest, generation: Generation, index: int) -> FinishReason:
        generation.completion_tokens += 1
        generation.push(index, "partial ")
        raise EngineError("The embedded engine failed while generating. Retry the request.")

    monkeypatch.setattr(EchoEngine, "_emit", emit)
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as failed:
        async with served.sdk.messages.stream(model=ECHO_ALIAS, max_tokens=16, messages=_user("Hi")) as stream:
            async for text in stream.text_stream:
                texts.append(text)

    body: Any = failed.value.body
    assert texts == ["partial "]
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert "Retry the request" in body["error"]["message"]


async def test_the_sdks_api_key_authenticates_and_a_bad_one_is_an_authentication_error() -> None:
    async with asgi_client(auth_settings()) as (_, app):
        key = await make_key(app)
        transport = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test")
        async with anthropic.AsyncAnthropic(
            base_url="http://test", api_key=key, http_client=transport, max_retries=0
        ) as sdk:
            message = await sdk.messages.create(model=ECHO_ALIAS, max_tokens=8, messages=_user("keyed"))
            with pytest.raises(anthropic.AuthenticationError) as refused:
                await sdk.with_options(api_key="pk-key_nope-wrong").messages.create(
                    model=ECHO_ALIAS, max_tokens=8, messages=_user("keyed")
                )

    assert message.content[0].type == "text" and message.content[0].text == "keyed"
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


async def test_count_tokens_counts_the_tools_as_the_message_does(served: Served) -> None:
    turns = _user("What is the weather in Paris?")
    bare = await served.sdk.messages.count_tokens(model=ECHO_ALIAS, messages=turns)
    counted = await served.sdk.messages.count_tokens(model=ECHO_ALIAS, messages=turns, tools=[WEATHER])
    answered = await served.sdk.messages.create(model=ECHO_ALIAS, max_tokens=16, messages=turns, tools=[WEATHER])

    assert counted.input_tokens > bare.input_tokens + 20  # the tool's definition is in the prompt
    assert answered.usage.input_tokens + (answered.usage.cache_read_input_tokens or 0) == counted.input_tokens
