"""Streams of both clients: typed chunks and the usage chunk from a real Portico; mid-stream errors, the retry of
a stream that failed before its first chunk, and job events resumed with Last-Event-ID, from loopback stubs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from portico_client import APIConnectionError, InternalServerError, OverloadedError
from portico_client.types import ChatCompletionChunk, Completion, JobEvent
from tests.conftest import ECHO_ALIAS, LiveServer
from tests.portico_client.support import Mode, ScriptedApp, portico_server, sdk_for, sse

MODES: list[Mode] = ["sync", "async"]
SSE_HEADERS = {"content-type": "text/event-stream"}


def chunk(content: str) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": None}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}


def stream_error(error_type: str, code: str, *, retryable: bool) -> dict[str, Any]:
    return {
        "error": {
            "type": error_type,
            "code": code,
            "message": f"{code} mid-stream",
            "param": None,
            "retryable": retryable,
            "request_id": "req_stream",
        }
    }


def chat_stream(client: Any) -> Any:
    return client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)


@pytest.mark.parametrize("mode", MODES)
async def test_a_chat_stream_yields_typed_chunks_and_exposes_the_usage_chunk(mode: Mode) -> None:
    with portico_server() as (server, key):
        async with sdk_for(mode, f"{server.url}/v1", api_key=key) as sdk:
            stream = await sdk(
                lambda client: client.chat.completions.create(
                    model=ECHO_ALIAS,
                    messages=[{"role": "user", "content": "one two three"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            chunks = await sdk.collect(stream)

    assert all(isinstance(item, ChatCompletionChunk) for item in chunks)
    text = "".join(item.choices[0].delta.content or "" for item in chunks if item.choices)
    assert text == "one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [item.choices[0].finish_reason for item in chunks if item.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert stream.usage is not None
    assert stream.usage == chunks[-1].usage
    assert (stream.usage.completion_tokens, stream.usage.total_tokens) == (3, stream.usage.prompt_tokens + 3)
    assert stream.request_id is not None and stream.request_id.startswith("req_")


@pytest.mark.parametrize("mode", MODES)
async def test_a_completion_stream_yields_completion_pieces(mode: Mode) -> None:
    with portico_server() as (server, key):
        async with sdk_for(mode, f"{server.url}/v1", api_key=key) as sdk:
            stream = await sdk(lambda client: client.completions.create(model=ECHO_ALIAS, prompt="a b", stream=True))
            pieces = await sdk.collect(stream)

    assert all(isinstance(piece, Completion) for piece in pieces)
    assert "".join(piece.choices[0].text for piece in pieces if piece.choices) == "a b"
    assert stream.usage is None  # not asked for


@pytest.mark.parametrize("mode", MODES)
async def test_an_error_event_after_chunks_is_raised_as_its_typed_exception(mode: Mode) -> None:
    frames = sse(chunk("Hel"), chunk("lo"), stream_error("server_error", "engine_error", retryable=False))
    app = ScriptedApp((200, SSE_HEADERS, frames))
    received: list[ChatCompletionChunk] = []
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url) as sdk:
            stream = await sdk(chat_stream)
            with pytest.raises(InternalServerError) as raised:
                await sdk.collect(stream, into=received)

    assert [item.choices[0].delta.content for item in received] == ["Hel", "lo"]
    error = raised.value
    assert (error.status_code, error.type, error.code, error.request_id) == (
        None,
        "server_error",
        "engine_error",
        "req_stream",
    )
    assert len(app.requests) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_an_overload_after_chunks_is_raised_not_retried(mode: Mode) -> None:
    """Retrying would repeat the chunks already delivered, so the typed error is raised."""
    frames = sse(chunk("Hel"), stream_error("overloaded_error", "engine_overloaded", retryable=True))
    app = ScriptedApp((200, SSE_HEADERS, frames), (200, SSE_HEADERS, sse(chunk("Hello"), "[DONE]")))
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url) as sdk:
            stream = await sdk(chat_stream)
            with pytest.raises(OverloadedError) as raised:
                await sdk.collect(stream)

    assert raised.value.retryable
    assert len(app.requests) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_an_overload_before_the_first_chunk_is_retried_with_the_same_key(mode: Mode) -> None:
    """The request waited for an engine slot (heartbeats), then the queue gave up: nothing was delivered, so
    the stream is opened again, with the same Idempotency-Key."""
    waited = [b": heartbeat\n\n", *sse(stream_error("overloaded_error", "engine_overloaded", retryable=True))]
    app = ScriptedApp((200, SSE_HEADERS, waited), (200, SSE_HEADERS, sse(chunk("Hel"), chunk("lo"), "[DONE]")))
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url) as sdk:
            chunks = await sdk.collect(await sdk(chat_stream))

    assert [item.choices[0].delta.content for item in chunks] == ["Hel", "lo"]
    keys = app.idempotency_keys()
    assert len(keys) == 2
    assert keys[0] is not None and keys[0] == keys[1]


@pytest.mark.parametrize("mode", MODES)
async def test_a_stream_cut_before_done_is_a_connection_error(mode: Mode) -> None:
    app = ScriptedApp((200, SSE_HEADERS, [*sse(chunk("Hel")), None]))
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url) as sdk:
            stream = await sdk(chat_stream)
            with pytest.raises(APIConnectionError):
                await sdk.collect(stream)

    assert len(app.requests) == 1


def job_frame(event_id: int, event: str, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


@pytest.mark.parametrize("mode", MODES)
async def test_job_events_resume_after_a_dropped_connection_with_last_event_id(mode: Mode) -> None:
    first = [
        job_frame(1, "queued", {"job_id": "job_1", "status": "queued"}),
        job_frame(2, "started", {"job_id": "job_1", "attempt": 1}),
        b'id: 3\nevent: delta\ndata: {"job_id"',  # cut mid-event: event 3 is not delivered
        None,
    ]
    rest: list[bytes | None] = [
        job_frame(3, "delta", {"job_id": "job_1", "choices": [{"index": 0, "text": "hi"}]}),
        b'id: 3\nevent: heartbeat\ndata: {"job_id": "job_1", "status": "running"}\n\n',
        job_frame(
            4,
            "completed",
            {
                "job_id": "job_1",
                "status": "succeeded",
                "usage": {"prompt_tokens": 2, "total_tokens": 3, "completion_tokens": 1},
            },
        ),
    ]
    app = ScriptedApp((200, SSE_HEADERS, first), (200, SSE_HEADERS, rest))
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url, max_retries=1) as sdk:
            stream = await sdk(lambda client: client.jobs.events("job_1"))
            events = await sdk.collect(stream)

    assert all(isinstance(event, JobEvent) for event in events)
    assert [(event.id, event.event) for event in events] == [
        (1, "queued"),
        (2, "started"),
        (3, "delta"),
        (4, "completed"),
    ]
    assert events[2].data["choices"][0]["text"] == "hi"
    assert [request.get("last-event-id") for request in app.requests] == [None, "2"]
    assert stream.usage is not None and stream.usage.total_tokens == 3


@pytest.mark.parametrize("mode", MODES)
async def test_job_events_keep_resuming_while_each_connection_makes_progress(mode: Mode) -> None:
    """The retry budget counts breaks in a row without a new event, not breaks in all."""
    replies = [
        (200, SSE_HEADERS, [job_frame(n, "delta", {"job_id": "job_1", "choices": []}), None]) for n in range(1, 5)
    ]
    end: list[bytes | None] = [job_frame(5, "cancelled", {"job_id": "job_1", "status": "cancelled"})]
    last = (200, SSE_HEADERS, end)
    app = ScriptedApp(*replies, last)
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url, max_retries=1) as sdk:
            events = await sdk.collect(await sdk(lambda client: client.jobs.events("job_1")))

    assert [event.id for event in events] == [1, 2, 3, 4, 5]
    assert [request.get("last-event-id") for request in app.requests] == [None, "1", "2", "3", "4"]
