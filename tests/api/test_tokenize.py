"""POST /v1/tokenize."""

from __future__ import annotations

import httpx

from tests.conftest import ECHO_ALIAS


async def test_counts_a_prompt(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/tokenize", json={"model": ECHO_ALIAS, "prompt": "four words right here"})

    assert response.status_code == 200
    assert response.json() == {"model": "echo-2026-01-01", "count": 4, "max_model_len": 256}


async def test_counts_messages_with_the_chat_template_applied(client: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "four words right here"}]
    chat = await client.post("/v1/tokenize", json={"model": ECHO_ALIAS, "messages": messages})
    completion = await client.post("/v1/chat/completions", json={"model": ECHO_ALIAS, "messages": messages})

    assert chat.json()["count"] > 4
    assert chat.json()["count"] == completion.json()["usage"]["prompt_tokens"]


async def test_needs_exactly_one_of_prompt_or_messages(client: httpx.AsyncClient) -> None:
    neither = await client.post("/v1/tokenize", json={"model": ECHO_ALIAS})
    both = await client.post(
        "/v1/tokenize",
        json={"model": ECHO_ALIAS, "prompt": "x", "messages": [{"role": "user", "content": "x"}]},
    )

    for response in (neither, both):
        assert response.status_code == 400
        assert "exactly one of 'prompt' or 'messages'" in response.json()["error"]["message"]


async def test_tools_count_as_the_chat_request_counts_them(client: httpx.AsyncClient) -> None:
    tool = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
    }
    messages = [{"role": "user", "content": "look it up"}]
    counted = await client.post("/v1/tokenize", json={"model": "echo", "messages": messages, "tools": [tool]})
    bare = await client.post("/v1/tokenize", json={"model": "echo", "messages": messages})
    chat = await client.post("/v1/chat/completions", json={"model": "echo", "messages": messages, "tools": [tool]})
    with_prompt = await client.post("/v1/tokenize", json={"model": "echo", "prompt": "x", "tools": [tool]})

    assert counted.json()["count"] == chat.json()["usage"]["prompt_tokens"] > bare.json()["count"]
    assert with_prompt.status_code == 400
