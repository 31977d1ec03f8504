"""Stored chat completions (`store: true`): kept with their request, read, listed, filtered, re-labelled and
deleted in OpenAI's shapes (checked with the openai SDK), never visible to another project."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from portico.services.admin import AdminService
from tests.conftest import (
    ECHO_ALIAS,
    ECHO_SNAPSHOT,
    asgi_client,
    auth_settings,
    bearer,
    echo_settings,
    live_server,
    make_key,
    sse_events,
)


@pytest.fixture
async def served(database_url: str, database_schema: str | None) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    async with asgi_client(echo_settings(database_url=database_url, database_schema=database_schema)) as pair:
        yield pair


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": content}], **extra}


async def stored_chat(client: httpx.AsyncClient, content: str, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/chat/completions", json=chat(content, store=True, **extra))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_stored_completion_is_retrieved_updated_and_deleted(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    request = {
        "model": ECHO_ALIAS,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]},
        ],
        "store": True,
        "metadata": {"topic": "greeting"},
    }
    created = (await client.post("/v1/chat/completions", json=request)).json()
    cid = created["id"]

    fetched = await client.get(f"/v1/chat/completions/{cid}")
    assert fetched.status_code == 200
    assert fetched.json() == {**created, "metadata": {"topic": "greeting"}}

    messages = (await client.get(f"/v1/chat/completions/{cid}/messages")).json()
    assert messages["object"] == "list" and messages["has_more"] is False
    assert messages["data"] == [
        {"id": f"{cid}-0", "role": "system", "content": "Be brief.", "name": None, "content_parts": None},
        {
            "id": f"{cid}-1",
            "role": "user",
            "content": "hello there",
            "name": None,
            "content_parts": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}],
        },
    ]
    page = (await client.get(f"/v1/chat/completions/{cid}/messages", params={"limit": 1})).json()
    assert [m["id"] for m in page["data"]] == [f"{cid}-0"] and page["has_more"] is True
    rest = (await client.get(f"/v1/chat/completions/{cid}/messages", params={"after": page["last_id"]})).json()
    assert [m["id"] for m in rest["data"]] == [f"{cid}-1"] and rest["has_more"] is False

    updated = await client.post(f"/v1/chat/completions/{cid}", json={"metadata": {"topic": "other", "k": "v"}})
    assert updated.json()["metadata"] == {"topic": "other", "k": "v"}
    patched = await client.patch(f"/v1/chat/completions/{cid}", json={"metadata": None})
    assert patched.json()["metadata"] == {}
    assert (await client.get(f"/v1/chat/completions/{cid}")).json()["metadata"] == {}

    deleted = await client.delete(f"/v1/chat/completions/{cid}")
    assert deleted.json() == {"id": cid, "object": "chat.completion.deleted", "deleted": True}
    for method in ("GET", "DELETE"):
        assert (await client.request(method, f"/v1/chat/completions/{cid}")).status_code == 404
    assert (await client.get(f"/v1/chat/completions/{cid}/messages")).status_code == 404


async def test_only_store_true_is_stored(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    plain = (await client.post("/v1/chat/completions", json=chat("not kept"))).json()
    refused = (await client.post("/v1/chat/completions", json=chat("not kept either", store=False))).json()
    for completion in (plain, refused):
        missing = await client.get(f"/v1/chat/completions/{completion['id']}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert (await client.get("/v1/chat/completions")).json()["data"] == []


async def test_a_streamed_completion_is_stored_whole_before_done(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    response = await client.post("/v1/chat/completions", json=chat("streamed and kept", store=True, stream=True))
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all("usage" not in chunk for chunk in chunks)  # include_usage was not asked for
    stored = (await client.get(f"/v1/chat/completions/{chunks[0]['id']}")).json()
    assert stored["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "streamed and kept", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert stored["model"] == ECHO_SNAPSHOT and stored["usage"]["completion_tokens"] == 3
    assert stored["created"] == chunks[0]["created"]


async def test_list_filters_by_model_and_metadata_and_pages(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    billing = [
        await stored_chat(client, f"billing {n}", metadata={"topic": "billing", "tier": "gold"}) for n in range(3)
    ]
    other = await stored_chat(client, "other", metadata={"topic": "support"})

    def ids(body: dict[str, Any]) -> list[str]:
        return [completion["id"] for completion in body["data"]]

    everything = (await client.get("/v1/chat/completions")).json()
    assert sorted(ids(everything)) == sorted(c["id"] for c in [*billing, other])
    assert all(c["object"] == "chat.completion" and "metadata" in c for c in everything["data"])
    by_topic = (await client.get("/v1/chat/completions", params={"metadata[topic]": "billing"})).json()
    assert sorted(ids(by_topic)) == sorted(c["id"] for c in billing)
    both = (
        await client.get("/v1/chat/completions", params={"metadata[topic]": "billing", "metadata[tier]": "x"})
    ).json()
    assert both["data"] == []
    for model in (ECHO_ALIAS, ECHO_SNAPSHOT):
        assert len((await client.get("/v1/chat/completions", params={"model": model})).json()["data"]) == 4
    assert (await client.get("/v1/chat/completions", params={"model": "other-model"})).json()["data"] == []

    first = (await client.get("/v1/chat/completions", params={"limit": 3})).json()
    assert len(first["data"]) == 3 and first["has_more"] is True and first["last_id"] == ids(first)[-1]
    second = (await client.get("/v1/chat/completions", params={"limit": 3, "after": first["last_id"]})).json()
    assert len(second["data"]) == 1 and second["has_more"] is False
    assert sorted(ids(first) + ids(second)) == sorted(ids(everything))
    newest_first = (await client.get("/v1/chat/completions", params={"order": "desc"})).json()
    assert ids(newest_first) == ids(everything)[::-1]


async def test_another_projects_stored_completions_are_404(database_url: str, database_schema: str | None) -> None:
    settings = auth_settings(database_url=database_url, database_schema=database_schema)
    async with asgi_client(settings) as (client, app):
        admin: AdminService = app.state.runtime.control.admin
        organization = app.state.runtime.control.local_principal.organization_id
        key_a = bearer(await make_key(app, project=(await admin.create_project(organization, "a")).id))
        key_b = bearer(await make_key(app, project=(await admin.create_project(organization, "b")).id))
        created = await client.post("/v1/chat/completions", json=chat("secret", store=True), headers=key_a)
        cid = created.json()["id"]
        for method, path, body in [
            ("GET", f"/v1/chat/completions/{cid}", None),
            ("GET", f"/v1/chat/completions/{cid}/messages", None),
            ("POST", f"/v1/chat/completions/{cid}", {"metadata": {"mine": "now"}}),
            ("PATCH", f"/v1/chat/completions/{cid}", {"metadata": {"mine": "now"}}),
            ("DELETE", f"/v1/chat/completions/{cid}", None),
        ]:
            response = await client.request(method, path, json=body, headers=key_b)
            assert response.status_code == 404, (method, path, response.text)
        assert (await client.get("/v1/chat/completions", headers=key_b)).json()["data"] == []
        mine = await client.get(f"/v1/chat/completions/{cid}", headers=key_a)
        assert mine.status_code == 200 and mine.json()["metadata"] == {}


def test_the_openai_sdk_works_with_stored_completions() -> None:
    with live_server(echo_settings()) as server:
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        with sdk:
            created = sdk.chat.completions.create(
                model=ECHO_ALIAS,
                messages=[{"role": "user", "content": "remember this"}],
                store=True,
                metadata={"project": "sdk"},
            )
            sdk.chat.completions.create(model=ECHO_ALIAS, messages=[{"role": "user", "content": "x"}], store=True)

            retrieved = sdk.chat.completions.retrieve(created.id)
            assert retrieved.choices[0].message.content == "remember this"
            assert retrieved.metadata == {"project": "sdk"}

            listed = sdk.chat.completions.list(metadata={"project": "sdk"})
            assert [c.id for c in listed] == [created.id]
            assert len(list(sdk.chat.completions.list(limit=1))) == 2  # the SDK follows the pages

            messages = sdk.chat.completions.messages.list(created.id)
            assert [(m.id, m.content) for m in messages] == [(f"{created.id}-0", "remember this")]

            updated = sdk.chat.completions.update(created.id, metadata={"project": "renamed"})
            assert updated.metadata == {"project": "renamed"}

            deleted = sdk.chat.completions.delete(created.id)
            assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "chat.completion.deleted")
            with pytest.raises(openai.NotFoundError):
                sdk.chat.completions.retrieve(created.id)
