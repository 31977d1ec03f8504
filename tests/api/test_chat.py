"""POST /v1/chat/completions through the full app with the echo engine."""

from __future__ import annotations

import json

import httpx
import openai

from tests.conftest import ECHO_ALIAS, ECHO_SNAPSHOT, asgi_client, echo_settings, sse_events


def chat_body(content: str = "hello there friend", **extra: object) -> dict[str, object]:
    return {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": content}], **extra}


async def test_answers_in_openai_shape_with_snapshot_and_usage(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body())

    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == ECHO_SNAPSHOT
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello there friend", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    usage = body["usage"]
    assert usage["completion_tokens"] == 3
    assert usage["prompt_tokens"] > 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_snapshot_id_is_accepted_as_model(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(model=ECHO_SNAPSHOT))

    assert response.status_code == 200
    assert response.json()["model"] == ECHO_SNAPSHOT


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body("one two three four", max_tokens=2))

    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "one two "
    assert choice["finish_reason"] == "length"
    assert response.json()["usage"]["completion_tokens"] == 2


async def test_max_completion_tokens_is_honoured(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body("a b c d", max_completion_tokens=1))

    assert response.json()["choices"][0]["message"]["content"] == "a "


async def test_stop_sequence_ends_the_answer_before_it(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body("alpha beta STOP gamma", stop=["STOP"]))

    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "alpha beta "
    assert choice["finish_reason"] == "stop"


async def test_n_returns_that_many_choices(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body("same words", n=3))

    choices = response.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert {c["message"]["content"] for c in choices} == {"same words"}
    assert response.json()["usage"]["completion_tokens"] == 6


async def test_json_object_mode_returns_parseable_json(client: httpx.AsyncClient) -> None:
    body = chat_body("make it json", response_format={"type": "json_object"})
    response = await client.post("/v1/chat/completions", json=body)

    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"echo": "make it json"}


async def test_content_parts_and_developer_role_are_accepted(client: httpx.AsyncClient) -> None:
    body = {
        "model": ECHO_ALIAS,
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "part one "}, {"type": "text", "text": "two"}]},
        ],
    }
    response = await client.post("/v1/chat/completions", json=body)

    assert response.json()["choices"][0]["message"]["content"] == "part one two"


async def test_stream_follows_openai_chunk_sequence_and_ends_with_done(client: httpx.AsyncClient) -> None:
    body = chat_body("streamed words here", stream=True, stream_options={"include_usage": True})
    response = await client.post("/v1/chat/completions", json=body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == ECHO_SNAPSHOT for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "streamed words here"
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3


async def test_stream_without_include_usage_sends_no_usage_chunk(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body("x y", stream=True))

    chunks = [json.loads(e) for e in sse_events(response.text)[:-1]]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


async def test_official_openai_sdk_works_unchanged() -> None:
    async with asgi_client(echo_settings()) as (http, _):
        sdk = openai.AsyncOpenAI(base_url="http://portico.test/v1", api_key="unused", http_client=http)
        completion = await sdk.chat.completions.create(
            model=ECHO_ALIAS, messages=[{"role": "user", "content": "sdk says hi"}]
        )
        assert completion.choices[0].message.content == "sdk says hi"
        assert completion.usage is not None and completion.usage.completion_tokens == 3

        stream = await sdk.chat.completions.create(
            model=ECHO_ALIAS,
            messages=[{"role": "user", "content": "sdk streams too"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, usage = [], None
        async for chunk in stream:
            pieces.extend(choice.delta.content or "" for choice in chunk.choices)
            usage = chunk.usage or usage
        assert "".join(pieces) == "sdk streams too"
        assert usage is not None and usage.completion_tokens == 3

        with_error = sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        try:
            await with_error
        except openai.NotFoundError as exc:
            assert exc.body is not None and exc.code == "model_not_found"
        else:
            raise AssertionError("expected a 404")
