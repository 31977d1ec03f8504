"""The HTTP API in front of the real embedded model (SmolLM2-135M via llama-cpp-python)."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from portico.settings import Settings
from tests.conftest import asgi_client, sse_events

pytestmark = pytest.mark.model

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


async def test_chat_sync_and_stream_agree_at_temperature_zero() -> None:
    async with asgi_client(Settings()) as (http, _):
        body = {"model": "smollm2", "messages": QUESTION, "temperature": 0, "max_tokens": 30}
        sync = await http.post("/v1/chat/completions", json=body)
        stream = await http.post(
            "/v1/chat/completions", json=body | {"stream": True, "stream_options": {"include_usage": True}}
        )
        counted = await http.post("/v1/tokenize", json={"model": "smollm2", "messages": QUESTION})

    answer = sync.json()["choices"][0]["message"]["content"]
    assert "Paris" in answer
    chunks = [json.loads(e) for e in sse_events(stream.text)[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == answer
    streamed_usage, sync_usage = chunks[-1]["usage"], sync.json()["usage"]
    assert streamed_usage["completion_tokens"] == sync_usage["completion_tokens"]
    # The second request found the first one's prompt in the KV cache: all but the last token were reused.
    assert sync_usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert streamed_usage["prompt_tokens_details"]["cached_tokens"] == sync_usage["prompt_tokens"] - 1
    assert counted.json()["count"] == sync.json()["usage"]["prompt_tokens"]
    assert counted.json()["max_model_len"] == 4096
    assert sync.json()["model"] == "smollm2-135m-instruct-q4_1-20250207"


async def test_json_mode_over_http_parses() -> None:
    async with asgi_client(Settings()) as (http, _):
        body = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Describe a cat as JSON."}],
            "response_format": {"type": "json_object"},
            "max_tokens": 300,
            "seed": 2,
        }
        response = await http.post("/v1/chat/completions", json=body)

    assert response.status_code == 200, response.text
    assert isinstance(json.loads(response.json()["choices"][0]["message"]["content"]), dict)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [("required", {"get_weather", "add"}), ({"type": "function", "function": {"name": "add"}}, {"add"})],
)
async def test_a_forced_call_parses_and_validates_sync_and_streamed(tool_choice: object, expected: set[str]) -> None:
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in (WEATHER, ADD)}
    body = {
        "model": "smollm2",
        "messages": WEATHER_QUESTION,
        "tools": [WEATHER, ADD],
        "tool_choice": tool_choice,
        "parallel_tool_calls": False,
        "max_tokens": 120,
        "temperature": 0,
    }
    async with asgi_client(Settings()) as (http, _):
        sync = await http.post("/v1/chat/completions", json=body)
        stream = await http.post("/v1/chat/completions", json=body | {"stream": True})

    (choice,) = sync.json()["choices"]
    assert choice["finish_reason"] == "tool_calls", choice
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] in expected
    jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])
    chunks = [json.loads(e) for e in sse_events(stream.text)[:-1]]
    parts = [p for c in chunks for p in c["choices"][0]["delta"].get("tool_calls") or []]
    assert {p["index"] for p in parts} == {0} and parts[0]["id"].startswith("call_")
    assert parts[0]["function"]["name"] == call["function"]["name"]
    assert "".join(p["function"]["arguments"] for p in parts) == call["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_auto_answers_with_text_or_a_valid_call() -> None:
    body = {"model": "smollm2", "messages": WEATHER_QUESTION, "tools": [WEATHER], "max_tokens": 80, "seed": 1}
    async with asgi_client(Settings()) as (http, _):
        answers = [(await http.post("/v1/chat/completions", json=body | {"seed": seed})).json() for seed in range(4)]

    for answer in answers:
        (choice,) = answer["choices"]
        for call in choice["message"].get("tool_calls") or []:
            jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])
        assert (choice["finish_reason"] == "tool_calls") == bool(choice["message"].get("tool_calls"))


async def test_logprobs_are_the_models_own_and_logit_bias_bans_a_token() -> None:
    body = {"model": "smollm2", "messages": QUESTION, "temperature": 0, "max_tokens": 4}
    async with asgi_client(Settings()) as (http, app):
        plain = await http.post("/v1/chat/completions", json=body | {"logprobs": True, "top_logprobs": 5})
        first = plain.json()["choices"][0]["logprobs"]["content"][0]
        (token_id,) = app.state.runtime.pipeline.registry.resolve("smollm2").engine.tokenize(first["token"])
        banned = await http.post("/v1/chat/completions", json=body | {"logit_bias": {str(token_id): -100}})

    content = plain.json()["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == plain.json()["choices"][0]["message"]["content"]
    for token in content:
        tops = [t["logprob"] for t in token["top_logprobs"]]
        assert len(tops) == 5 and tops == sorted(tops, reverse=True) and all(lp <= 0 for lp in tops)
        # Greedy decoding picks the most likely token, and probabilities sum to at most 1.
        assert token["logprob"] == pytest.approx(tops[0]) and sum(math.exp(lp) for lp in tops) <= 1 + 1e-6
    assert not banned.json()["choices"][0]["message"]["content"].startswith(first["token"])


async def test_echo_with_logprobs_scores_the_prompt_as_evaluation_harnesses_ask() -> None:
    prompt = "The capital of France is Paris"
    body = {"model": "smollm2", "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 0}
    async with asgi_client(Settings()) as (http, _):
        scored = await http.post("/v1/completions", json=body)
        unlikely = await http.post("/v1/completions", json=body | {"prompt": "The capital of France is banana"})

    (choice,) = scored.json()["choices"]
    assert choice["text"] == prompt and choice["finish_reason"] == "length"
    logprobs = choice["logprobs"]
    assert "".join(logprobs["tokens"]) == prompt and logprobs["token_logprobs"][0] is None
    assert all(lp <= 0 for lp in logprobs["token_logprobs"][1:]) and logprobs["top_logprobs"][0] is None
    assert scored.json()["usage"]["completion_tokens"] == 0
    # " Paris" after the question is far likelier than " banana" (every token of it, summed).
    banana = unlikely.json()["choices"][0]["logprobs"]["token_logprobs"]
    shared = 5  # "The", " capital", " of", " France", " is"
    assert sum(logprobs["token_logprobs"][shared:]) > sum(banana[shared:]) + 2
