"""Every generating request takes the one pipeline (services/generation/pipeline.py), so what chat gets, the
others get too: conversation turns and predict fall back to another model when theirs is busy, predict is
metered like chat (also for an upstream model), and ``store: true`` keeps a streamed upstream answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from portico.constants import Scope
from portico.settings import AuthSettings, Settings
from tests.conftest import asgi_client, bearer, live_server, make_key, sse_events
from tests.upstream_mock import UPSTREAM_ALIAS, UPSTREAM_SNAPSHOT, MockUpstream, upstream_settings

BUSY, SPARE = "busy", "spare"
BUSY_SNAPSHOT, SPARE_SNAPSHOT = "busy-2026-01-01", "spare-2026-01-01"


def _busy_and_spare() -> Settings:
    """A one-slot echo model with no waiting room (a second request is refused 503 at once) that falls back to
    another echo model."""
    return Settings.model_validate(
        {
            "queue": {"max_waiting": 0},
            "models": [
                {
                    "alias": BUSY,
                    "snapshot": BUSY_SNAPSHOT,
                    "engine": "echo",
                    "parallel_slots": 1,
                    "fallbacks": [SPARE],
                    "echo": {"tokens_per_second": 20},
                },
                {"alias": SPARE, "snapshot": SPARE_SNAPSHOT, "engine": "echo"},
            ],
        }
    )


@pytest.fixture
async def busy() -> AsyncIterator[httpx.AsyncClient]:
    """A client whose ``busy`` model's only slot is taken by a long stream for the whole test."""
    with live_server(_busy_and_spare()) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            long = {"model": BUSY, "messages": [{"role": "user", "content": "word " * 600}], "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=long) as holding:
                assert holding.status_code == 200
                lines = holding.aiter_lines()
                while not (await anext(lines)).startswith("data: "):  # the stream has its slot
                    pass
                yield http


async def test_chat_on_a_busy_model_falls_back(busy: httpx.AsyncClient) -> None:
    body = {"model": BUSY, "messages": [{"role": "user", "content": "hi there"}]}
    answer = await busy.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200 and answer.json()["model"] == SPARE_SNAPSHOT


async def test_a_conversation_turn_falls_back_like_chat(busy: httpx.AsyncClient) -> None:
    created = await busy.post("/v1/conversations", json={"model": BUSY})
    cid = created.json()["id"]
    whole = await busy.post(f"/v1/conversations/{cid}/messages", json={"content": "first words"})
    assert whole.status_code == 200, whole.text
    assert whole.json()["content"] == "first words" and whole.json()["model"] == SPARE_SNAPSHOT

    streamed = await busy.post(f"/v1/conversations/{cid}/messages", json={"content": "second words", "stream": True})
    assert streamed.status_code == 200 and streamed.headers["x-served-by"] == SPARE
    chunks = [json.loads(event) for event in sse_events(streamed.text)[:-1]]
    assert {chunk["model"] for chunk in chunks} == {SPARE_SNAPSHOT}

    history = (await busy.get(f"/v1/conversations/{cid}/messages")).json()["data"]
    assert [(m["role"], m["content"], m["model"]) for m in history] == [
        ("user", "first words", None),
        ("assistant", "first words", SPARE_SNAPSHOT),
        ("user", "second words", None),
        ("assistant", "second words", SPARE_SNAPSHOT),
    ]


async def test_predict_falls_back_like_chat(busy: httpx.AsyncClient) -> None:
    answer = await busy.post(f"/v1/models/{BUSY}/predict", json={"input": "echo me"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == SPARE_SNAPSHOT and answer.json()["output"] == "echo me"
    assert answer.headers["x-served-by"] == SPARE


async def _usage_by_endpoint(http: httpx.AsyncClient, key: dict[str, str], requests: int) -> dict[str, Any]:
    for _ in range(100):
        usage = (await http.get("/v1/usage", params={"group_by": "endpoint"}, headers=key)).json()
        if usage["totals"]["requests"] >= requests:
            return {bucket["key"]: bucket for bucket in usage["buckets"]}
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {requests} usage records")


async def test_predict_on_an_upstream_model_is_metered_like_chat() -> None:
    with MockUpstream() as mock:
        async with asgi_client(upstream_settings(mock, auth=AuthSettings(enabled=True))) as (http, app):
            key = bearer(await make_key(app, scopes=[Scope.INFERENCE, Scope.USAGE_READ]))
            predicted = await http.post(f"/v1/models/{UPSTREAM_ALIAS}/predict", json={"input": "hi"}, headers=key)
            assert predicted.status_code == 200, predicted.text
            chat = {"model": UPSTREAM_ALIAS, "messages": [{"role": "user", "content": "hi"}]}
            chatted = await http.post("/v1/chat/completions", json=chat, headers=key)
            assert chatted.status_code == 200, chatted.text
            assert predicted.json()["output"] == chatted.json()["choices"][0]["message"]["content"]
            assert predicted.json()["usage"] == chatted.json()["usage"]  # the upstream's usage, with its cost
            assert predicted.headers["x-request-cost"] == chatted.headers["x-request-cost"]
            buckets = await _usage_by_endpoint(http, key, 2)
    assert buckets["/v1/models/{model}/predict"]["cost_usd"] == buckets["/v1/chat/completions"]["cost_usd"] > 0
    assert mock.requests[0].body["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("stream", [False, True])
async def test_store_keeps_an_upstream_answer_streamed_or_not(stream: bool) -> None:
    with MockUpstream() as mock:
        async with asgi_client(upstream_settings(mock)) as (http, _):
            body = {
                "model": UPSTREAM_ALIAS,
                "messages": [{"role": "user", "content": "keep this"}],
                "store": True,
                "stream": stream,
            }
            answer = await http.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            if stream:
                chunks = [json.loads(event) for event in sse_events(answer.text)[:-1]]
                completion_id = chunks[0]["id"]
                text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
            else:
                completion_id = answer.json()["id"]
                text = answer.json()["choices"][0]["message"]["content"]
            stored = await http.get(f"/v1/chat/completions/{completion_id}")
            assert stored.status_code == 200, stored.text
            assert stored.json()["model"] == UPSTREAM_SNAPSHOT
            assert stored.json()["choices"][0]["message"]["content"] == text != ""
            assert "store" not in mock.requests[0].body  # kept here, not upstream
