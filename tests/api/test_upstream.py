"""Models served by an upstream OpenAI-compatible server, as a client sees them: pass-through, usage and cost,
error mapping, limits, and client disconnects closing the upstream request."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from portico.constants import Scope
from portico.settings import AuthSettings, RoutingSettings
from tests.conftest import asgi_client, bearer, live_server, make_key, sse_events, wait_until
from tests.upstream_mock import (
    PROMPT_TOKENS,
    UPSTREAM_ALIAS,
    UPSTREAM_KEY_ENV,
    UPSTREAM_MODEL,
    UPSTREAM_SNAPSHOT,
    MockUpstream,
    closed_port,
    upstream_settings,
)

SECRET = "sk-upstream-secret-456"
MESSAGES = [{"role": "user", "content": "Say something."}]
CHAT = {"model": UPSTREAM_ALIAS, "messages": MESSAGES, "max_tokens": 50, "store": False}
COMPLETION = {"model": UPSTREAM_ALIAS, "prompt": "Once upon", "max_tokens": 50}
TEXT = "w0 w1 w2 w3 w4 "


def _cost(prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * 1.0 + completion_tokens * 2.0) / 1e6  # upstream_model's pricing


@pytest.fixture
def mock(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockUpstream]:
    monkeypatch.setenv(UPSTREAM_KEY_ENV, SECRET)
    with MockUpstream() as upstream:
        yield upstream


@pytest.fixture
async def client(mock: MockUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(upstream_settings(mock)) as (http, _):
        yield http


async def test_chat_passes_through_with_the_snapshot_and_the_upstreams_usage(
    client: httpx.AsyncClient, mock: MockUpstream
) -> None:
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == UPSTREAM_SNAPSHOT and body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": TEXT, "refusal": None}
    assert body["usage"]["prompt_tokens"] == PROMPT_TOKENS and body["usage"]["completion_tokens"] == 5
    assert body["usage"]["cost"] == pytest.approx(_cost(PROMPT_TOKENS, 5))
    sent = mock.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    # As validated, re-serialized without unset fields, under the upstream's model name; `store` stays here.
    assert sent.body == {"model": UPSTREAM_MODEL, "messages": MESSAGES, "max_tokens": 50}
    assert SECRET not in response.text


async def test_completions_and_embeddings_pass_through(client: httpx.AsyncClient, mock: MockUpstream) -> None:
    completion = await client.post("/v1/completions", json=COMPLETION)
    assert completion.status_code == 200, completion.text
    assert completion.json()["choices"][0]["text"] == TEXT and completion.json()["model"] == UPSTREAM_SNAPSHOT
    embeddings = await client.post("/v1/embeddings", json={"model": UPSTREAM_ALIAS, "input": ["a", "b"]})
    assert embeddings.status_code == 200, embeddings.text
    listing = embeddings.json()
    assert (
        listing["model"] == UPSTREAM_SNAPSHOT and [d["embedding"] for d in listing["data"]] == [[0.5, -0.25, 0.125]] * 2
    )
    assert listing["usage"]["prompt_tokens"] == 2 * PROMPT_TOKENS
    assert listing["usage"]["cost"] == pytest.approx(_cost(2 * PROMPT_TOKENS, 0))
    assert [r.body["model"] for r in mock.requests] == [UPSTREAM_MODEL, UPSTREAM_MODEL]


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/completions"])
async def test_streams_pass_through_with_exact_usage(
    client: httpx.AsyncClient, mock: MockUpstream, endpoint: str
) -> None:
    body = CHAT if endpoint == "/v1/chat/completions" else COMPLETION
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    response = await client.post(endpoint, json=streamed)
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["model"] for chunk in chunks} == {UPSTREAM_SNAPSHOT}
    texts = [c["choices"][0].get("delta", {}).get("content") or c["choices"][0].get("text", "") for c in chunks[:-1]]
    assert "".join(texts) == TEXT
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and (usage["prompt_tokens"], usage["completion_tokens"]) == (PROMPT_TOKENS, 5)
    assert usage["cost"] == pytest.approx(_cost(PROMPT_TOKENS, 5))
    assert mock.requests[0].body["stream_options"] == {"include_usage": True}

    # Without include_usage the client gets no usage chunk, but the upstream is still asked for one.
    plain = await client.post(endpoint, json={**body, "stream": True})
    assert all("usage" not in json.loads(event) for event in sse_events(plain.text)[:-1])
    assert mock.requests[1].body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("fail", "status", "code"),
    [
        ("429", 429, "upstream_rate_limited"),
        ("500", 502, "upstream_error"),
        ("reset", 502, "upstream_error"),
        ("400", 400, "invalid_request"),
    ],
)
async def test_upstream_failures_answer_in_portico_envelope(
    mock: MockUpstream, caplog: pytest.LogCaptureFixture, fail: str, status: int, code: str
) -> None:
    caplog.set_level(logging.DEBUG)
    mock.fail = fail
    # One retry without backoff, and a breaker that never opens: the error the last attempt got is the answer.
    routing = RoutingSettings(retries=1, backoff_s=0, max_backoff_s=0, breaker_failures=100)
    async with asgi_client(upstream_settings(mock, routing=routing)) as (client, _):
        answers = [await client.post("/v1/chat/completions", json=CHAT)]
        if fail != "reset":  # a stream whose status the upstream already sent fails mid-stream instead
            answers.append(await client.post("/v1/chat/completions", json={**CHAT, "stream": True}))
    attempts = 1 if status == 400 else 2  # a retryable failure is retried once
    assert len(mock.requests) == attempts * len(answers)
    for response in answers:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and error["retryable"] is (status != 400)
        assert SECRET not in response.text and "Traceback" not in response.text and "/srv/app.py" not in response.text
    if fail == "429":
        assert answers[0].headers["retry-after"] == "7"
    if fail == "400":
        assert "max_tokens is too large" in answers[0].json()["error"]["message"]
    assert SECRET not in caplog.text


async def test_unreachable_and_slow_upstreams(monkeypatch: pytest.MonkeyPatch, mock: MockUpstream) -> None:
    monkeypatch.setenv(UPSTREAM_KEY_ENV, SECRET)
    async with asgi_client(upstream_settings(f"http://127.0.0.1:{closed_port()}/v1")) as (http, _):
        down = await http.post("/v1/chat/completions", json=CHAT)
    assert down.status_code == 503 and down.json()["error"]["code"] == "upstream_unavailable"
    assert down.json()["error"]["retryable"] is True
    mock.delay_s = 5
    async with asgi_client(upstream_settings(mock, timeout_s=0.2)) as (http, _):
        slow = await http.post("/v1/chat/completions", json=CHAT)
    assert slow.status_code == 504 and slow.json()["error"]["code"] == "timeout"


async def test_limits_settle_with_the_upstreams_actual_usage(mock: MockUpstream) -> None:
    async with asgi_client(upstream_settings(mock, auth=AuthSettings(enabled=True))) as (http, app):
        key = bearer(await make_key(app, scopes=[Scope.INFERENCE, Scope.USAGE_READ], limits={"tokens_per_day": 1000}))
        big = {**CHAT, "max_tokens": 900}  # reserves the prompt estimate + 900 of the 1000
        first = await http.post("/v1/chat/completions", json=big, headers=key)
        assert first.status_code == 200, first.text
        # Settled at the 16 tokens the upstream reported, so another reservation of ~900 still fits.
        second = await http.post("/v1/chat/completions", json={**big, "stream": True}, headers=key)
        assert second.status_code == 200, second.text
        third = await http.post("/v1/chat/completions", json={**big, "max_tokens": 990}, headers=key)
        assert third.status_code == 429 and third.json()["error"]["code"] == "tokens_per_day"
        totals: dict[str, Any] = {}
        for _ in range(100):
            totals = (await http.get("/v1/usage", headers=key)).json()["totals"]
            if totals["requests"] >= 2:
                break
            await asyncio.sleep(0.05)
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (2 * PROMPT_TOKENS, 10)
    assert totals["cost_usd"] == pytest.approx(2 * _cost(PROMPT_TOKENS, 5))


async def test_finished_streams_leave_their_connection_for_the_next_request(mock: MockUpstream) -> None:
    async with asgi_client(upstream_settings(mock)) as (http, _):
        for _ in range(3):
            streamed = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
            assert streamed.status_code == 200 and "[DONE]" in streamed.text
    assert len({recorded.client_port for recorded in mock.requests}) == 1


async def test_stream_disconnect_closes_the_upstream_stream_within_100ms(mock: MockUpstream) -> None:
    mock.chunks, mock.chunk_delay_s = 400, 0.02
    with live_server(upstream_settings(mock)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            body = {**CHAT, "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                seen = 0
                async for line in response.aiter_lines():
                    seen += line.startswith("data: ")
                    if seen == 3:
                        break
                left = time.monotonic()
        await wait_until(lambda: bool(mock.closed_at))
    assert mock.completed == 0
    assert mock.closed_at[0] - left < 0.1


async def test_sync_disconnect_closes_the_upstream_request(mock: MockUpstream) -> None:
    mock.delay_s = 30  # the upstream would answer only after this
    with live_server(upstream_settings(mock)) as server:
        payload = json.dumps(CHAT).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(head + payload)
            await wait_until(lambda: len(mock.requests) == 1)
            left = time.monotonic()
        await wait_until(lambda: bool(mock.closed_at))
    assert mock.completed == 0
    assert mock.closed_at[0] - left < 1.0  # at once, not when the upstream would have answered


async def test_deterministic_requests_are_answered_from_the_cache(
    client: httpx.AsyncClient, mock: MockUpstream
) -> None:
    body = {**CHAT, "temperature": 0}
    first = await client.post("/v1/chat/completions", json=body)
    second = await client.post("/v1/chat/completions", json=body)
    assert (first.headers["x-cache-status"], second.headers["x-cache-status"]) == ("miss", "hit")
    assert second.json()["choices"] == first.json()["choices"] and second.json()["usage"]["cost"] == 0
    embedding = {"model": UPSTREAM_ALIAS, "input": "a"}
    statuses = [(await client.post("/v1/embeddings", json=embedding)).headers["x-cache-status"] for _ in range(2)]
    assert statuses == ["miss", "hit"]
    assert [r.path for r in mock.requests] == ["/v1/chat/completions", "/v1/embeddings"]
