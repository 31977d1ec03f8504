"""Tool calls, logprobs and the other OpenAI chat fields over HTTP, on the echo engine (which answers with the
user's words, so a user message written as a call comes back as the model's call) and relayed from an upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ECHO_ALIAS, asgi_client, echo_settings, sse_events
from tests.upstream_mock import UPSTREAM_ALIAS, UPSTREAM_KEY_ENV, MockUpstream, upstream_settings

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL_TEXT = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
TWO_CALLS = (
    f'Let me look.\n{CALL_TEXT}\n<tool_call>{{"name": "get_weather", "arguments": {{"city": "Oslo"}}}}</tool_call>'
)


def _chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": content}], **extra}


def _chunks(text: str) -> list[dict[str, Any]]:
    return [json.loads(event) for event in sse_events(text) if event != "[DONE]"]


def _reassembled(chunks: list[dict[str, Any]]) -> tuple[str, list[dict[str, str]], list[str]]:
    """What a client rebuilds from a stream: the content, each call (by its index) and the finish reasons."""
    content, calls, finishes = "", {}, []
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for part in delta.get("tool_calls") or []:
                call = calls.setdefault(part["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] += part.get("id") or ""
                call["name"] += part["function"].get("name") or ""
                call["arguments"] += part["function"].get("arguments") or ""
            if choice["finish_reason"]:
                finishes.append(choice["finish_reason"])
    return content, [calls[i] for i in sorted(calls)], finishes


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(echo_settings()) as (http, _):
        yield http


async def test_a_call_is_answered_as_tool_calls_sync_and_streamed(client: httpx.AsyncClient) -> None:
    sync = await client.post("/v1/chat/completions", json=_chat(TWO_CALLS, tools=[WEATHER]))
    stream = await client.post("/v1/chat/completions", json=_chat(TWO_CALLS, tools=[WEATHER], stream=True))

    assert sync.status_code == 200, sync.text
    (choice,) = sync.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look.\n"
    calls = choice["message"]["tool_calls"]
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"}),
        ("function", "get_weather", {"city": "Oslo"}),
    ]
    assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]
    content, streamed, finishes = _reassembled(_chunks(stream.text))
    assert content == "Let me look.\n" and finishes == ["tool_calls"]
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]


async def test_the_sdk_round_trip_of_a_call_and_its_result_is_accepted(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/chat/completions", json=_chat(CALL_TEXT, tools=[WEATHER]))
    message = first.json()["choices"][0]["message"]  # as `message.model_dump()` sends it back: nulls included
    result = {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "18 C and sunny"}
    turns = [{"role": "user", "content": CALL_TEXT}, message, result, {"role": "user", "content": "thanks"}]
    second = await client.post(
        "/v1/chat/completions", json={"model": ECHO_ALIAS, "messages": turns, "tools": [WEATHER]}
    )

    assert second.status_code == 200, second.text
    assert second.json()["choices"][0]["message"]["content"] == "thanks"
    # The definitions, the call and its result all reached the prompt, and are billed with it.
    assert second.json()["usage"]["prompt_tokens"] > first.json()["usage"]["prompt_tokens"]


async def test_tool_choice_none_reads_the_answer_as_text(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=_chat(CALL_TEXT, tools=[WEATHER], tool_choice="none"))
    (choice,) = response.json()["choices"]
    assert (choice["finish_reason"], choice["message"]["content"]) == ("stop", CALL_TEXT)
    assert "tool_calls" not in choice["message"]


async def test_legacy_functions_answer_with_function_call(client: httpx.AsyncClient) -> None:
    body = _chat(CALL_TEXT, functions=[WEATHER["function"]], function_call={"name": "get_weather"})
    sync = await client.post("/v1/chat/completions", json=body)
    stream = await client.post("/v1/chat/completions", json=body | {"stream": True})

    (choice,) = sync.json()["choices"]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    deltas = [c["choices"][0]["delta"] for c in _chunks(stream.text) if c["choices"]]
    assert "".join(d.get("function_call", {}).get("arguments", "") for d in deltas) == '{"city": "Paris"}'


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [{"type": "custom", "custom": {"name": "grep"}}]}, "tools[0].type"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ],
)
async def test_what_the_model_cannot_serve_is_a_400_naming_the_parameter(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/chat/completions", json=_chat("hi", **({"tools": [WEATHER]} | extra)))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_image_input_on_a_text_model_is_a_400_naming_the_part(client: httpx.AsyncClient) -> None:
    parts = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    response = await client.post(
        "/v1/chat/completions", json={"model": ECHO_ALIAS, "messages": [{"role": "user", "content": parts}]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content[1].type"


async def test_a_tool_message_without_its_call_id_names_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json={"model": ECHO_ALIAS, "messages": [{"role": "tool", "content": "18 C"}]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].tool_call_id"


async def test_logprobs_sync_and_streamed_and_on_completions(client: httpx.AsyncClient) -> None:
    sync = await client.post("/v1/chat/completions", json=_chat("red green", logprobs=True, top_logprobs=1))
    stream = await client.post("/v1/chat/completions", json=_chat("red green", logprobs=True, stream=True))
    legacy = await client.post("/v1/completions", json={"model": ECHO_ALIAS, "prompt": "red green", "logprobs": 1})
    echoed = await client.post("/v1/completions", json={"model": ECHO_ALIAS, "prompt": "red green", "echo": True})

    tokens = sync.json()["choices"][0]["logprobs"]["content"]
    assert [(t["token"], t["logprob"], [a["token"] for a in t["top_logprobs"]]) for t in tokens] == [
        ("red ", 0.0, ["red "]),
        ("green", 0.0, ["green"]),
    ]
    streamed = [
        t["token"]
        for c in _chunks(stream.text)
        for ch in c["choices"]
        for t in (ch["logprobs"] or {}).get("content") or []
    ]
    assert streamed == ["red ", "green"]
    assert legacy.json()["choices"][0]["logprobs"] == {
        "tokens": ["red ", "green"],
        "token_logprobs": [0.0, 0.0],
        "top_logprobs": [{"red ": 0.0}, {"green": 0.0}],
        "text_offset": [0, 4],
    }
    assert echoed.json()["choices"][0]["text"] == "red greenred green"


@pytest.mark.parametrize(
    "field",
    [
        {"service_tier": "auto"},
        {"safety_identifier": "user-1"},
        {"prompt_cache_key": "k"},
        {"prompt_cache_retention": "24h"},
        {"reasoning_effort": "low"},
        {"verbosity": "low"},
        {"modalities": ["text"]},
        {"prediction": {"type": "content", "content": "hi"}},
        {"logprobs": False},
        {"parallel_tool_calls": True},
    ],
)
async def test_fields_sdks_send_as_a_matter_of_course_are_accepted(
    client: httpx.AsyncClient, field: dict[str, Any]
) -> None:
    response = await client.post("/v1/chat/completions", json=_chat("hello", **field))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "hello"


# -- relayed from an upstream ------------------------------------------------------------------------------
@pytest.fixture
def mock(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockUpstream]:
    monkeypatch.setenv(UPSTREAM_KEY_ENV, "sk-test")
    with MockUpstream() as upstream:
        yield upstream


async def test_an_upstreams_parallel_calls_are_relayed_sync_and_streamed(mock: MockUpstream) -> None:
    body = {"model": UPSTREAM_ALIAS, "messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER]}
    async with asgi_client(upstream_settings(mock)) as (http, _):
        sync = await http.post("/v1/chat/completions", json=body | {"tool_choice": "required"})
        stream = await http.post("/v1/chat/completions", json=body | {"stream": True})

    assert sync.status_code == 200, sync.text
    (choice,) = sync.json()["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert [(c["id"], c["function"]["arguments"]) for c in choice["message"]["tool_calls"]] == [
        ("call_up_0", '{"n": 0}'),
        ("call_up_1", '{"n": 1}'),
    ]
    assert mock.requests[0].body["tools"] == [WEATHER] and mock.requests[0].body["tool_choice"] == "required"
    _, calls, finishes = _reassembled(_chunks(stream.text))
    assert calls == [
        {"id": "call_up_0", "name": "get_weather", "arguments": '{"n": 0}'},
        {"id": "call_up_1", "name": "get_weather", "arguments": '{"n": 1}'},
    ]
    assert finishes == ["tool_calls"]


async def test_a_call_repeating_an_earlier_one_ends_the_answer(client: httpx.AsyncClient) -> None:
    repeated = "\n".join([CALL_TEXT] * 5)
    response = await client.post("/v1/chat/completions", json=_chat(repeated, tools=[WEATHER]))

    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert len(choice["message"]["tool_calls"]) == 2  # the first repeat ends it; the other three never ran
    assert response.json()["usage"]["completion_tokens"] < 40


async def test_the_sdks_own_dump_of_an_assistant_message_is_taken_back() -> None:
    message = {
        "content": None,
        "refusal": None,
        "role": "assistant",
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    }
    async with asgi_client(echo_settings()) as (http, _):
        response = await http.post(
            "/v1/chat/completions",
            json={
                "model": ECHO_ALIAS,
                "messages": [
                    {"role": "user", "content": "weather?"},
                    message,
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                    {"role": "user", "content": "thanks"},
                ],
                "tools": [WEATHER],
            },
        )

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "thanks"
