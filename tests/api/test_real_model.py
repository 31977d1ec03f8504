"""The HTTP API in front of the real embedded model (SmolLM2-135M via llama-cpp-python)."""

from __future__ import annotations

import json

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
