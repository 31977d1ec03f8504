"""POST /v1/completions."""

from __future__ import annotations

import json

import httpx

from tests.conftest import ECHO_ALIAS, ECHO_SNAPSHOT, sse_events


async def test_completes_a_prompt_in_openai_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/completions", json={"model": ECHO_ALIAS, "prompt": "once upon a time"})

    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert body["model"] == ECHO_SNAPSHOT
    assert body["choices"] == [{"index": 0, "text": "once upon a time", "finish_reason": "stop", "logprobs": None}]
    assert body["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 4,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 0},
        "cost": 0.0,  # the echo model has no prices
    }


async def test_several_prompts_give_choices_in_order(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/completions", json={"model": ECHO_ALIAS, "prompt": ["first one", "second"], "n": 2}
    )

    texts = [c["text"] for c in response.json()["choices"]]
    assert texts == ["first one", "first one", "second", "second"]
    assert response.json()["usage"]["prompt_tokens"] == 3


async def test_stream_ends_with_done_and_usage(client: httpx.AsyncClient) -> None:
    body = {"model": ECHO_ALIAS, "prompt": "a b c", "stream": True, "stream_options": {"include_usage": True}}
    response = await client.post("/v1/completions", json=body)

    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "a b c"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] == 6
