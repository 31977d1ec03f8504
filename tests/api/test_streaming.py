"""SSE behaviour: heartbeats while idle, the mid-stream error event, and no [DONE] after a failure."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from portico.constants import FinishReason
from portico.engines.base import Generation, GenerationRequest
from portico.engines.echo import EchoEngine
from portico.errors import EngineError
from tests.conftest import ECHO_ALIAS, asgi_client, echo_settings, sse_events

CHAT = "/v1/chat/completions"


def chat(content: str = "hi", **fields: Any) -> dict[str, Any]:
    return {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": content}], **fields}


async def test_heartbeat_comments_flow_while_the_request_is_queued() -> None:
    settings = echo_settings(tokens_per_second=20, parallel_slots=1, heartbeat_interval_s=0.05)
    async with asgi_client(settings) as (http, _):
        busy = asyncio.create_task(http.post(CHAT, json=chat("w " * 10)))
        await asyncio.sleep(0.05)
        response = await http.post(CHAT, json=chat("queued answer", stream=True))
        await busy

    assert response.status_code == 200
    assert ": heartbeat" in response.text.split("queued")[0]
    assert sse_events(response.text)[-1] == "[DONE]"


async def test_no_heartbeat_when_tokens_keep_flowing(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat("fast words", stream=True))

    assert ": heartbeat" not in response.text


def _failing_after(tokens: int, error: Exception) -> Any:
    async def emit(self: EchoEngine, request: GenerationRequest, generation: Generation, index: int) -> FinishReason:
        for _ in range(tokens):
            generation.completion_tokens += 1
            generation.push(index, "partial ")
        raise error

    return emit


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (EngineError("The embedded engine failed while generating. Retry the request."), "engine_error"),
        (RuntimeError("KV cache exploded at 0xdeadbeef"), "internal_error"),
    ],
)
async def test_error_after_the_stream_started_is_one_error_event_and_no_done(
    monkeypatch: pytest.MonkeyPatch, error: Exception, code: str
) -> None:
    monkeypatch.setattr(EchoEngine, "_emit", _failing_after(2, error))
    async with asgi_client(echo_settings()) as (http, _):
        response = await http.post(CHAT, json=chat(stream=True))

    assert response.status_code == 200
    events = sse_events(response.text)
    assert "[DONE]" not in events
    *chunks, last = (json.loads(e) for e in events)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "partial partial "
    assert last["error"]["code"] == code
    assert last["error"]["request_id"] == response.headers["x-request-id"]
    assert "0xdeadbeef" not in response.text


async def test_same_failure_without_stream_is_an_http_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EchoEngine, "_emit", _failing_after(1, EngineError("engine failed; retry")))
    async with asgi_client(echo_settings()) as (http, _):
        response = await http.post(CHAT, json=chat())

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "engine_error"


async def test_queue_deadline_while_streaming_is_an_error_event() -> None:
    settings = echo_settings(
        tokens_per_second=10, parallel_slots=1, heartbeat_interval_s=0.05, queue={"wait_timeout_s": 0.2}
    )
    async with asgi_client(settings) as (http, _):
        busy = asyncio.create_task(http.post(CHAT, json=chat("w " * 20)))
        await asyncio.sleep(0.05)
        response = await http.post(CHAT, json=chat(stream=True))
        busy.cancel()

    events = sse_events(response.text)
    assert "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert error["code"] == "engine_overloaded"
    assert error["retryable"] is True
