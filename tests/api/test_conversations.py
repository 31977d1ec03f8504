"""/v1/conversations: lifecycle, the three context strategies, streaming, usage, serialization, pagination and
another project's conversations (404), over SQLite and PostgreSQL where storage is involved."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from portico.constants import Scope
from portico.services.admin import AdminService
from portico.settings import PricingSettings, Settings
from tests.conftest import (
    ECHO_ALIAS,
    ECHO_SNAPSHOT,
    asgi_client,
    auth_settings,
    bearer,
    echo_settings,
    live_server,
    make_key,
    registry_of,
    sse_events,
    wait_until,
)

PRICING = PricingSettings(input_per_million=1_000_000, output_per_million=2_000_000)  # $1 / $2 per token


def priced(settings: Settings) -> Settings:
    settings.models[0].pricing = PRICING
    return settings


@pytest.fixture
async def served(database_url: str, database_schema: str | None) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    settings = priced(echo_settings(database_url=database_url, database_schema=database_schema, context_window=256))
    async with asgi_client(settings) as pair:
        yield pair


@pytest.fixture
async def small(database_url: str, database_schema: str | None) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """A 64-token context window, so a few turns overflow it."""
    settings = priced(echo_settings(database_url=database_url, database_schema=database_schema, context_window=64))
    async with asgi_client(settings) as pair:
        yield pair


async def create(client: httpx.AsyncClient, **fields: Any) -> str:
    response = await client.post("/v1/conversations", json={"model": ECHO_ALIAS, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def say(client: httpx.AsyncClient, conversation: str, content: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(f"/v1/conversations/{conversation}/messages", json={"content": content, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def history(client: httpx.AsyncClient, conversation: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/conversations/{conversation}/messages", params={"limit": 100})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def prompt_tokens(client: httpx.AsyncClient, messages: list[dict[str, str]]) -> int:
    """What the model's chat template makes of these messages, counted by /v1/tokenize."""
    response = await client.post("/v1/tokenize", json={"model": ECHO_ALIAS, "messages": messages})
    return int(response.json()["count"])


def turn_of(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


async def test_lifecycle(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    created = await client.post(
        "/v1/conversations", json={"model": ECHO_ALIAS, "system": "Be brief.", "metadata": {"user": "u1"}}
    )
    assert created.status_code == 201
    conversation = created.json()
    assert conversation["id"].startswith("conv_")
    assert conversation["object"] == "conversation"
    assert conversation["context_strategy"] == "truncate_oldest"
    assert conversation["metadata"] == {"user": "u1"}
    assert conversation["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0}
    cid = conversation["id"]

    first = await say(client, cid, "hello there friend")
    assert first["object"] == "conversation.message"
    assert (first["role"], first["content"], first["status"], first["finish_reason"]) == (
        "assistant",
        "hello there friend",
        "completed",
        "stop",
    )
    assert first["model"] == ECHO_SNAPSHOT and first["conversation_id"] == cid
    assert first["context"] == {"dropped_message_ids": [], "summarized_message_ids": [], "summary_message_id": None}
    second = await say(client, cid, "and again")

    messages = await history(client, cid)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "hello there friend"),
        ("assistant", "hello there friend"),
        ("user", "and again"),
        ("assistant", "and again"),
    ]
    assert [m["id"] for m in messages] == [
        first["user_message_id"],
        first["id"],
        second["user_message_id"],
        second["id"],
    ]
    assert all(m["in_context"] for m in messages)

    fetched = (await client.get(f"/v1/conversations/{cid}")).json()
    totals = fetched["usage"]
    turns = [first["usage"], second["usage"]]
    assert totals["prompt_tokens"] == sum(u["prompt_tokens"] for u in turns)
    assert totals["completion_tokens"] == sum(u["completion_tokens"] for u in turns) == 3 + 2
    assert totals["cost"] == pytest.approx(sum(u["cost"] for u in turns))
    assert totals["cost"] == pytest.approx(totals["prompt_tokens"] * 1 + totals["completion_tokens"] * 2)

    listed = (await client.get("/v1/conversations")).json()
    assert [c["id"] for c in listed["data"]] == [cid]

    deleted = await client.delete(f"/v1/conversations/{cid}")
    assert deleted.json() == {"id": cid, "object": "conversation.deleted", "deleted": True}
    assert (await client.get(f"/v1/conversations/{cid}")).status_code == 404
    assert (await client.get(f"/v1/conversations/{cid}/messages")).status_code == 404
    gone = await client.post(f"/v1/conversations/{cid}/messages", json={"content": "anyone?"})
    assert gone.status_code == 404
    assert (await client.delete(f"/v1/conversations/{cid}")).status_code == 404


async def test_each_turn_sends_the_system_prompt_and_the_history(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    cid = await create(client, system="You are terse.")
    await say(client, cid, "first question here")
    second = await say(client, cid, "second one")
    expected = await prompt_tokens(
        client,
        [
            {"role": "system", "content": "You are terse."},
            *turn_of("first question here", "first question here"),
            {"role": "user", "content": "second one"},
        ],
    )
    assert second["usage"]["prompt_tokens"] == expected


async def test_bad_requests(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    unknown = await client.post("/v1/conversations", json={"model": "nope"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")
    strategy = await client.post("/v1/conversations", json={"model": ECHO_ALIAS, "context_strategy": "forget"})
    assert strategy.status_code == 400
    cid = await create(client)
    empty = await client.post(f"/v1/conversations/{cid}/messages", json={"content": ""})
    assert empty.status_code == 400
    assert (await client.get("/v1/conversations/conv_missing")).status_code == 404


def words(prefix: str, count: int) -> str:
    return " ".join(f"{prefix}{index}" for index in range(count))


async def test_truncate_oldest_drops_whole_pairs_and_keeps_the_system_prompt(
    small: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, _ = small
    cid = await create(client, system="Be kind.", context_strategy="truncate_oldest")
    turns = [await say(client, cid, words(f"t{n}w", 6), max_tokens=8) for n in range(4)]
    dropping = next(t for t in turns if t["context"]["dropped_message_ids"])
    dropped = dropping["context"]["dropped_message_ids"]
    first_pair = [turns[0]["user_message_id"], turns[0]["id"]]
    assert dropped[:2] == first_pair
    assert len(dropped) % 2 == 0  # whole user/assistant pairs

    messages = await history(client, cid)
    assert len(messages) == 8  # nothing is deleted from the history
    out = [m["id"] for m in messages if not m["in_context"]]
    assert set(dropped) <= set(out)

    # The turn that dropped them was prompted with the system prompt and the pairs still in context.
    index = turns.index(dropping)
    kept = [t for t in turns[:index] if t["id"] not in out]
    expected = await prompt_tokens(
        client,
        [
            {"role": "system", "content": "Be kind."},
            *[m for t in kept for m in turn_of(t["content"], t["content"])],
            {"role": "user", "content": dropping["content"]},
        ],
    )
    assert dropping["usage"]["prompt_tokens"] == expected
    assert expected + 8 <= 64


@pytest.fixture
async def medium(database_url: str, database_schema: str | None) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """A 128-token context window: room for a few turns and for the prompt that asks for a summary."""
    settings = priced(echo_settings(database_url=database_url, database_schema=database_schema, context_window=128))
    async with asgi_client(settings) as pair:
        yield pair


async def test_summarize_folds_the_oldest_turns_into_a_billed_summary_and_continues(
    medium: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = medium
    cid = await create(client, context_strategy="summarize")
    turns = [await say(client, cid, words(f"s{n}w", 6), max_tokens=8) for n in range(8)]
    summarizing = next(t for t in turns if t["context"]["summary_message_id"])
    report = summarizing["context"]
    assert report["summarized_message_ids"][:2] == [turns[0]["user_message_id"], turns[0]["id"]]
    assert report["dropped_message_ids"] == []

    messages = await history(client, cid)
    by_id = {m["id"]: m for m in messages}
    summary = by_id[report["summary_message_id"]]
    assert summary["role"] == "summary"
    # The echo model repeats its prompt's last user turn: the transcript it was asked to summarize.
    assert summary["content"].startswith("User: s0w0 s0w1")
    assert summary["usage"]["completion_tokens"] > 0 and summary["usage"]["cost"] > 0
    assert all(not by_id[i]["in_context"] for i in report["summarized_message_ids"])

    # The conversation goes on after the summary.
    after = await say(client, cid, "still here", max_tokens=8)
    assert after["content"] == "still here"

    # The summary is usage of the conversation: in its totals and in the usage records of its endpoint.
    generated = [m for m in await history(client, cid) if m["usage"] is not None]
    totals = (await client.get(f"/v1/conversations/{cid}")).json()["usage"]
    assert totals["completion_tokens"] == sum(m["usage"]["completion_tokens"] for m in generated)
    assert totals["cost"] == pytest.approx(sum(m["usage"]["cost"] for m in generated))
    await app.state.runtime.control.meter.recorder.flush()
    usage = (await client.get("/v1/usage", params={"group_by": "endpoint"})).json()
    bucket = next(b for b in usage["buckets"] if b["key"] == "/v1/conversations/{id}/messages")
    assert bucket["requests"] == len(generated)
    assert bucket["completion_tokens"] == totals["completion_tokens"]


async def test_error_strategy_refuses_with_400_and_stores_nothing(small: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = small
    cid = await create(client, context_strategy="error")
    stored = 0
    for n in range(6):
        response = await client.post(
            f"/v1/conversations/{cid}/messages", json={"content": words(f"e{n}w", 6), "max_tokens": 8}
        )
        if response.status_code != 200:
            break
        stored += 2
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["limit"] == 64
    assert stored >= 2
    messages = await history(client, cid)
    assert len(messages) == stored and all(m["in_context"] for m in messages)


async def test_a_message_too_long_for_the_window_is_400_whatever_the_strategy(
    small: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, _ = small
    cid = await create(client, context_strategy="truncate_oldest")
    await say(client, cid, "short one", max_tokens=8)
    response = await client.post(f"/v1/conversations/{cid}/messages", json={"content": words("x", 80)})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert all(m["in_context"] for m in await history(client, cid))  # nothing was dropped for it


async def test_streamed_turn_is_stored_when_the_stream_ends(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    cid = await create(client)
    response = await client.post(
        f"/v1/conversations/{cid}/messages", json={"content": "streamed words here", "stream": True}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == ECHO_SNAPSHOT for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "streamed words here"
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3
    assert last["conversation_id"] == cid and last["message_id"] == chunks[0]["id"]
    assert last["context"]["dropped_message_ids"] == []

    messages = await history(client, cid)
    assert [(m["id"], m["role"], m["content"]) for m in messages] == [
        (last["user_message_id"], "user", "streamed words here"),
        (last["message_id"], "assistant", "streamed words here"),
    ]
    assert messages[1]["usage"] == last["usage"] and messages[1]["status"] == "completed"
    totals = (await client.get(f"/v1/conversations/{cid}")).json()["usage"]
    assert totals["completion_tokens"] == 3 and totals["cost"] == pytest.approx(last["usage"]["cost"])


async def test_concurrent_messages_are_serialized(database_url: str, database_schema: str | None) -> None:
    settings = echo_settings(database_url=database_url, database_schema=database_schema, tokens_per_second=200)
    async with asgi_client(settings) as (client, _):
        cid = await create(client)
        texts = [words(f"c{n}w", 8) for n in range(4)]
        answers = await asyncio.gather(*(say(client, cid, text) for text in texts))
        messages = await history(client, cid)
    assert sorted(a["content"] for a in answers) == sorted(texts)
    # Each user message is followed by its own answer: no turn interleaves another.
    assert [m["role"] for m in messages] == ["user", "assistant"] * 4
    for user, assistant in zip(messages[::2], messages[1::2], strict=True):
        assert assistant["content"] == user["content"]
    # Each turn saw every turn before it.
    prompts = [next(a for a in answers if a["id"] == m["id"])["usage"]["prompt_tokens"] for m in messages[1::2]]
    assert prompts == sorted(prompts) and len(set(prompts)) == 4


async def test_a_turn_appended_meanwhile_by_another_process_is_not_interleaved(
    database_url: str, database_schema: str | None
) -> None:
    """Two apps on one database stand for two server processes (each has its own in-process locks)."""
    slow = echo_settings(database_url=database_url, database_schema=database_schema, tokens_per_second=20)
    fast = echo_settings(database_url=database_url, database_schema=database_schema)
    async with asgi_client(slow) as (first, first_app), asgi_client(fast) as (second, _):
        cid = await create(first)
        url = f"/v1/conversations/{cid}/messages"

        async def slow_stream() -> httpx.Response:
            return await first.post(url, json={"content": words("slow", 10), "stream": True})

        streaming = asyncio.create_task(slow_stream())
        engine = registry_of(first_app).resolve(ECHO_ALIAS).engine
        await wait_until(lambda: engine.stats.active_generations == 1)  # it read the history and is generating
        quick = await second.post(url, json={"content": "quick one"})
        assert quick.status_code == 200
        events = sse_events((await streaming).text)
        messages = await history(second, cid)
    error = json.loads(events[-1])["error"]
    assert (error["code"], error["retryable"]) == ("conversation_busy", True)
    assert [(m["role"], m["content"]) for m in messages] == [("user", "quick one"), ("assistant", "quick one")]


async def test_messages_are_paginated_oldest_first(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    cid = await create(client)
    for n in range(3):
        await say(client, cid, f"message {n}")
    url = f"/v1/conversations/{cid}/messages"
    page = (await client.get(url, params={"limit": 4})).json()
    assert [m["content"] for m in page["data"]] == ["message 0"] * 2 + ["message 1"] * 2
    assert page["has_more"] is True and page["first_id"] == page["data"][0]["id"]
    rest = (await client.get(url, params={"limit": 4, "after": page["last_id"]})).json()
    assert [m["content"] for m in rest["data"]] == ["message 2"] * 2 and rest["has_more"] is False
    newest = (await client.get(url, params={"limit": 1, "order": "desc"})).json()
    assert newest["data"][0]["role"] == "assistant" and newest["data"][0]["content"] == "message 2"

    others = [await create(client) for _ in range(2)]
    listed = (await client.get("/v1/conversations", params={"limit": 2})).json()
    assert len(listed["data"]) == 2 and listed["has_more"] is True
    tail = (await client.get("/v1/conversations", params={"limit": 2, "after": listed["last_id"]})).json()
    assert len(tail["data"]) == 1 and tail["has_more"] is False
    # Created within one second, so ordered by id within it: every conversation once, over the two pages.
    assert sorted(c["id"] for c in listed["data"] + tail["data"]) == sorted([cid, *others])


async def test_another_projects_conversations_are_404(database_url: str, database_schema: str | None) -> None:
    settings = auth_settings(database_url=database_url, database_schema=database_schema)
    async with asgi_client(settings) as (client, app):
        admin: AdminService = app.state.runtime.control.admin
        organization = app.state.runtime.control.local_principal.organization_id
        project_a = await admin.create_project(organization, "a")
        project_b = await admin.create_project(organization, "b")
        scopes = [Scope.CONVERSATIONS_READ, Scope.CONVERSATIONS_WRITE]
        key_a = bearer(await make_key(app, project=project_a.id, scopes=scopes))
        key_b = bearer(await make_key(app, project=project_b.id, scopes=scopes))
        created = await client.post("/v1/conversations", json={"model": ECHO_ALIAS}, headers=key_a)
        cid = created.json()["id"]
        assert (
            await client.post(f"/v1/conversations/{cid}/messages", json={"content": "hi"}, headers=key_a)
        ).is_success

        for method, path, body in [
            ("GET", f"/v1/conversations/{cid}", None),
            ("GET", f"/v1/conversations/{cid}/messages", None),
            ("POST", f"/v1/conversations/{cid}/messages", {"content": "mine now"}),
            ("POST", f"/v1/conversations/{cid}/messages", {"content": "mine now", "stream": True}),
            ("DELETE", f"/v1/conversations/{cid}", None),
        ]:
            response = await client.request(method, path, json=body, headers=key_b)
            assert response.status_code == 404, (method, path, response.text)
        assert (await client.get("/v1/conversations", headers=key_b)).json()["data"] == []
        mine = await client.get(f"/v1/conversations/{cid}/messages", headers=key_a)
        assert [m["content"] for m in mine.json()["data"]] == ["hi", "hi"]


async def test_a_client_leaving_mid_stream_leaves_the_partial_answer_stored_and_billed() -> None:
    long_message = words("w", 400)  # 20 s at 20 tokens/s: only the disconnect ends it early
    settings = priced(echo_settings(tokens_per_second=20, context_window=4096))
    with live_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            cid = await create(http)
            url = f"/v1/conversations/{cid}/messages"
            async with http.stream("POST", url, json={"content": long_message, "stream": True}) as response:
                lines = response.aiter_lines()
                received = 0
                while received < 4:
                    if (await anext(lines)).startswith("data: "):
                        received += 1
            # leaving the block closes the connection mid-stream
            found: list[dict[str, Any]] = []
            for _ in range(200):
                found = await history(http, cid)
                if len(found) == 2:
                    break
                await asyncio.sleep(0.05)
            totals = (await http.get(f"/v1/conversations/{cid}")).json()["usage"]
    assert len(found) == 2, "the partial answer was not stored"
    user, answer = found
    assert user["content"] == long_message
    assert answer["status"] == "incomplete" and answer["finish_reason"] is None
    assert answer["content"] and long_message.startswith(answer["content"].rstrip())
    produced = answer["usage"]["completion_tokens"]
    assert 3 <= produced < 100
    assert answer["usage"]["cost"] == pytest.approx(answer["usage"]["prompt_tokens"] + 2 * produced)
    assert totals["completion_tokens"] == produced


async def test_summarize_drops_turns_when_the_window_cannot_hold_a_summary_request(
    database_url: str, database_schema: str | None
) -> None:
    # 40 tokens: a turn or two fit, but not the summary instruction with any transcript and the summary's room.
    settings = echo_settings(database_url=database_url, database_schema=database_schema, context_window=40)
    async with asgi_client(settings) as (client, _):
        cid = await create(client, context_strategy="summarize")
        turns = [await say(client, cid, words(f"d{n}w", 4), max_tokens=4) for n in range(4)]
        messages = await history(client, cid)
    overflowing = next(t for t in turns if t["context"]["dropped_message_ids"])
    assert overflowing["context"]["summary_message_id"] is None
    assert overflowing["context"]["dropped_message_ids"][:2] == [turns[0]["user_message_id"], turns[0]["id"]]
    assert all(m["role"] != "summary" for m in messages)


async def test_a_client_leaving_before_a_whole_answer_leaves_it_stored_incomplete() -> None:
    settings = echo_settings(tokens_per_second=20, context_window=4096)
    with live_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            cid = await create(http)
            with pytest.raises(httpx.ReadTimeout):  # 400 words at 20 tokens/s: the answer needs about 20 s
                await http.post(f"/v1/conversations/{cid}/messages", json={"content": words("w", 400)}, timeout=2)
            found: list[dict[str, Any]] = []
            for _ in range(200):
                found = await history(http, cid)
                if len(found) == 2:
                    break
                await asyncio.sleep(0.05)
            # The conversation is free again: the next turn follows the partial one.
            after = await say(http, cid, "next")
    assert len(found) == 2 and found[1]["status"] == "incomplete"
    assert 0 < found[1]["usage"]["completion_tokens"] < 400
    assert after["content"] == "next"
