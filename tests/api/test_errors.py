"""The error contract: every status the API promises, from real requests, in the one envelope."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from portico.engines.echo import EchoEngine
from tests.conftest import ECHO_ALIAS, asgi_client, echo_settings

CHAT = "/v1/chat/completions"


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": "hi"}], **fields}


def assert_envelope(response: httpx.Response, status: int, code: str, *, retryable: bool = False) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"type", "code", "message", "param", "retryable", "request_id"}
    assert error["code"] == code
    assert error["retryable"] is retryable
    assert response.headers["x-should-retry"] == ("true" if retryable else "false")
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["message"]
    return dict(error)


async def test_unknown_field_is_400_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat(temprature=0.5))

    error = assert_envelope(response, 400, "unknown_parameter")
    assert error["param"] == "temprature"
    assert "temprature" in error["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"n": 0}, "n"),
        ({"presence_penalty": 2.1}, "presence_penalty"),
        ({"frequency_penalty": -2.1}, "frequency_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": 2**64}, "seed"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"metadata": {"k": 5}}, "metadata.k"),
        ({"model": ""}, "model"),
    ],
)
async def test_out_of_bounds_or_wrong_types_are_400_with_param(
    client: httpx.AsyncClient, fields: dict[str, Any], param: str
) -> None:
    response = await client.post(CHAT, json=chat(**fields))

    error = assert_envelope(response, 400, "invalid_request")
    assert error["param"] is not None and error["param"].startswith(param)


async def test_missing_required_field_is_400_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json={"model": ECHO_ALIAS})

    error = assert_envelope(response, 400, "invalid_request")
    assert error["param"] == "messages"
    assert "Missing required parameter" in error["message"]


async def test_n_above_the_server_cap_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat(n=9))

    assert assert_envelope(response, 400, "invalid_request")["param"] == "n"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "echo", "messages": [',
        b"not json at all",
        b'{"model": "echo", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"model": "echo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1' + b"0" * 5000 + b"}",
        b"",
    ],
    ids=["truncated", "not-json", "invalid-utf8", "deeply-nested", "huge-number", "empty"],
)
async def test_unparseable_bodies_are_clear_4xx_never_500(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(CHAT, content=raw, headers={"content-type": "application/json"})

    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"] in {"invalid_json", "invalid_request"}


async def test_large_max_tokens_is_context_length_exceeded(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat(max_tokens=2**31 - 1))

    assert assert_envelope(response, 400, "context_length_exceeded")["limit"] == 256


async def test_absurd_max_tokens_is_400_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat(max_tokens=10**30))

    assert assert_envelope(response, 400, "invalid_request")["param"] == "max_tokens"


async def test_context_length_exceeded_carries_limit_and_requested(client: httpx.AsyncClient) -> None:
    prompt = await client.post("/v1/tokenize", json={"model": ECHO_ALIAS, "messages": chat()["messages"]})
    prompt_tokens = prompt.json()["count"]

    response = await client.post(CHAT, json=chat(max_tokens=256))

    error = assert_envelope(response, 400, "context_length_exceeded")
    assert error["limit"] == 256
    assert error["requested"] == prompt_tokens + 256
    assert error["param"] == "messages"


async def test_prompt_alone_over_the_window_is_context_length_exceeded(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/completions", json={"model": ECHO_ALIAS, "prompt": "word " * 300})

    error = assert_envelope(response, 400, "context_length_exceeded")
    assert error["requested"] > error["limit"] == 256


async def test_unknown_model_is_404_model_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat(model="gpt-17"))

    error = assert_envelope(response, 404, "model_not_found")
    assert error["param"] == "model"
    assert "gpt-17" in error["message"]


async def test_unknown_route_is_404_in_the_envelope(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/v1/nothing-here"), 404, "not_found")


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    response = await client.put(CHAT)  # GET lists stored completions; POST creates

    assert_envelope(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"  # both routes of the path, not just the first one


async def test_body_over_the_limit_is_413() -> None:
    async with asgi_client(echo_settings(max_body_bytes=2048)) as (http, _):
        response = await http.post(CHAT, json=chat(messages=[{"role": "user", "content": "x" * 4096}]))

    assert_envelope(response, 413, "payload_too_large")


async def test_chunked_body_over_the_limit_is_413() -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1024

    async with asgi_client(echo_settings(max_body_bytes=2048)) as (http, _):
        response = await http.post(CHAT, content=chunks(), headers={"content-type": "application/json"})

    assert_envelope(response, 413, "payload_too_large")


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, content=json.dumps(chat()), headers={"content-type": "text/plain"})

    error = assert_envelope(response, 415, "unsupported_media_type")
    assert "application/json" in error["message"]


async def test_form_encoded_body_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, data={"model": ECHO_ALIAS})

    assert_envelope(response, 415, "unsupported_media_type")


async def test_unexpected_failure_is_500_without_internals(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_prompt = "TOP-SECRET system prompt sk-live-123"

    def explode(self: EchoEngine, text: str) -> list[int]:
        raise RuntimeError(f"tokenizer crashed on {secret_prompt}")

    monkeypatch.setattr(EchoEngine, "tokenize", explode)
    async with asgi_client(echo_settings()) as (http, _):
        response = await http.post(CHAT, json=chat(messages=[{"role": "system", "content": secret_prompt}]))

    error = assert_envelope(response, 500, "internal_error")
    assert error["type"] == "server_error"
    for leak in ("TOP-SECRET", "sk-live", "Traceback", "RuntimeError", "tokenizer crashed"):
        assert leak not in response.text


async def test_full_queue_is_503_engine_overloaded_with_retry_after() -> None:
    settings = echo_settings(tokens_per_second=20, parallel_slots=1, queue={"max_waiting": 0})
    async with asgi_client(settings) as (http, _):
        busy = asyncio.create_task(http.post(CHAT, json=chat(messages=[{"role": "user", "content": "w " * 40}])))
        await asyncio.sleep(0.1)
        response = await http.post(CHAT, json=chat())
        streamed = await http.post(CHAT, json=chat(stream=True))
        busy.cancel()

    for rejected in (response, streamed):
        assert_envelope(rejected, 503, "engine_overloaded", retryable=True)
        assert int(rejected.headers["retry-after"]) >= 1


async def test_queue_wait_past_deadline_is_503() -> None:
    settings = echo_settings(tokens_per_second=10, parallel_slots=1, queue={"wait_timeout_s": 0.2})
    async with asgi_client(settings) as (http, _):
        busy = asyncio.create_task(http.post(CHAT, json=chat(messages=[{"role": "user", "content": "w " * 40}])))
        await asyncio.sleep(0.05)
        response = await http.post(CHAT, json=chat())
        busy.cancel()

    error = assert_envelope(response, 503, "engine_overloaded", retryable=True)
    assert "0.2 s" in error["message"]
    assert int(response.headers["retry-after"]) >= 1


async def test_slow_generation_is_504_timeout() -> None:
    async with asgi_client(echo_settings(tokens_per_second=20, request_timeout_s=0.2)) as (http, app):
        response = await http.post(CHAT, json=chat(messages=[{"role": "user", "content": "w " * 100}]))
        engine = next(iter(app.state.runtime.registry)).engine

        assert_envelope(response, 504, "timeout", retryable=True)
        await asyncio.sleep(0.2)
        assert engine.stats.active_generations == 0
