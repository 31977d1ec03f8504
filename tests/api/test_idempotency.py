"""Idempotency-Key: one run per key and body, replayed to retries, across requests, projects and processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from portico.constants import Capability, Scope
from portico.services.admin import AdminService
from portico.services.idempotency import IdempotencyService, StoredResponse, request_fingerprint
from portico.settings import IdempotencySettings, QueueSettings, Settings
from tests.conftest import (
    ECHO_ALIAS,
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

CHAT_PATH = "/v1/chat/completions"
CHAT: dict[str, Any] = {
    "model": ECHO_ALIAS,
    "messages": [{"role": "user", "content": "one two three four five six seven eight"}],
    "max_tokens": 16,
}
OTHER_CHAT: dict[str, Any] = {**CHAT, "messages": [{"role": "user", "content": "something else"}]}
# A request holding the engine (or the key's concurrency) while another arrives.
HOLDER: dict[str, Any] = {**CHAT, "messages": [{"role": "user", "content": "hold the slot a while " * 3}]}
# The echo engine at this pace takes about 3 s for CHAT: long enough for the others to arrive while it runs.
SLOW = {"tokens_per_second": 4, "first_token_ms": 1000}


def keyed(key: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"idempotency-key": key, **(headers or {})}


def generations(app: FastAPI) -> int:
    return registry_of(app).resolve(ECHO_ALIAS).generator(Capability.CHAT).stats.generations_started


async def billed_requests(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> int:
    response = await client.get("/v1/usage", headers=headers)
    assert response.status_code == 200, response.text
    requests: int = response.json()["totals"]["requests"]
    return requests


def assert_replay_of(replay: httpx.Response, first: httpx.Response) -> None:
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay.headers["content-type"] == first.headers["content-type"]
    assert replay.headers["x-request-id"] != first.headers["x-request-id"]


async def test_twenty_concurrent_requests_with_one_key_run_once(database_url: str, database_schema: str | None) -> None:
    settings = echo_settings(database_url=database_url, database_schema=database_schema, **SLOW)
    async with asgi_client(settings) as (client, app):
        responses = await asyncio.gather(*(client.post(CHAT_PATH, json=CHAT, headers=keyed("k-20")) for _ in range(20)))

        done = [response for response in responses if response.status_code == 200]
        busy = [response for response in responses if response.status_code == 409]
        assert len(done) + len(busy) == 20
        assert done, "no request ran"
        assert busy, "all twenty finished one after another: the test did not overlap them"
        assert {response.content for response in done} == {done[0].content}
        for response in busy:
            assert response.json()["error"]["code"] == "idempotency_key_in_progress"
            assert int(response.headers["retry-after"]) >= 1
        retry = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-20"))
        assert retry.status_code == 200 and retry.content == done[0].content
        assert generations(app) == 1
        assert await billed_requests(client) == 1


async def test_a_retry_replays_the_response_and_is_not_billed_again() -> None:
    async with asgi_client(echo_settings()) as (client, app):
        first = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-retry"))
        replay = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-retry"))

        assert first.status_code == 200 and "idempotent-replayed" not in first.headers
        assert_replay_of(replay, first)
        assert replay.json()["id"] == first.json()["id"]
        assert generations(app) == 1
        assert await billed_requests(client) == 1
        # Without the key (or with another) the same body is a new request.
        fresh = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-other"))
        assert fresh.json()["id"] != first.json()["id"]
        assert await billed_requests(client) == 2


async def test_key_order_and_whitespace_of_a_json_body_do_not_matter() -> None:
    async with asgi_client(echo_settings()) as (client, app):
        first = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-json"))
        reordered = orjson.dumps(dict(reversed(list(CHAT.items()))), option=orjson.OPT_INDENT_2)
        replay = await client.post(
            CHAT_PATH, content=reordered, headers=keyed("k-json", {"content-type": "application/json"})
        )

        assert_replay_of(replay, first)
        assert generations(app) == 1


@pytest.mark.parametrize(
    ("path", "body"), [(CHAT_PATH, OTHER_CHAT), ("/v1/completions", {"model": ECHO_ALIAS, "prompt": "hi"})]
)
async def test_the_same_key_for_another_request_is_409_reused(path: str, body: dict[str, Any]) -> None:
    async with asgi_client(echo_settings()) as (client, app):
        await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-reused"))
        response = await client.post(path, json=body, headers=keyed("k-reused"))

        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "idempotency_key_reused" and error["param"] == "Idempotency-Key"
        assert response.headers["x-should-retry"] == "false"
        assert generations(app) == 1


async def test_the_same_key_while_the_first_runs_is_409_in_progress_then_replays() -> None:
    async with asgi_client(echo_settings(**SLOW)) as (client, app):
        first = asyncio.create_task(client.post(CHAT_PATH, json=CHAT, headers=keyed("k-busy")))
        await wait_until(lambda: generations(app) == 1)
        busy = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-busy"))
        another_body = await client.post(CHAT_PATH, json=OTHER_CHAT, headers=keyed("k-busy"))
        done = await first

        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "idempotency_key_in_progress"
        assert busy.headers["retry-after"] == "1" and busy.headers["x-should-retry"] == "true"
        assert another_body.json()["error"]["code"] == "idempotency_key_reused"
        assert_replay_of(await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-busy")), done)
        assert generations(app) == 1


async def test_a_stream_is_replayed_as_the_same_sse_body() -> None:
    async with asgi_client(echo_settings()) as (client, app):
        body = {**CHAT, "stream": True}
        first = await client.post(CHAT_PATH, json=body, headers=keyed("k-stream"))
        replay = await client.post(CHAT_PATH, json=body, headers=keyed("k-stream"))

        assert first.headers["content-type"].startswith("text/event-stream")
        assert sse_events(first.text)[-1] == "[DONE]"
        assert_replay_of(replay, first)
        assert sse_events(replay.text) == sse_events(first.text)
        assert generations(app) == 1
        assert await billed_requests(client) == 1


async def test_a_4xx_answer_is_stored_and_replayed() -> None:
    async with asgi_client(echo_settings()) as (client, _):
        missing = {**CHAT, "model": "no-such-model"}
        first = await client.post(CHAT_PATH, json=missing, headers=keyed("k-404"))
        replay = await client.post(CHAT_PATH, json=missing, headers=keyed("k-404"))

        assert first.status_code == 404
        assert_replay_of(replay, first)


async def test_a_5xx_first_response_is_not_stored_and_the_retry_runs() -> None:
    settings = echo_settings(parallel_slots=1, queue=QueueSettings(max_waiting=0), **SLOW)
    async with asgi_client(settings) as (client, app):
        holder = asyncio.create_task(client.post(CHAT_PATH, json=HOLDER))
        await wait_until(lambda: generations(app) == 1)
        overloaded = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-503"))
        await holder
        retry = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-503"))

        assert overloaded.status_code == 503
        assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
        assert retry.json()["choices"][0]["message"]["content"].startswith("one two")
        assert generations(app) == 2


async def test_a_429_first_response_is_not_stored_and_the_retry_runs() -> None:
    async with asgi_client(auth_settings(**SLOW)) as (client, app):
        key = bearer(await make_key(app, limits={"max_concurrent": 1}))
        holder = asyncio.create_task(client.post(CHAT_PATH, json=HOLDER, headers=key))
        await wait_until(lambda: generations(app) == 1)
        limited = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-429", key))
        await holder
        retry = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-429", key))

        assert limited.status_code == 429
        assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
        assert generations(app) == 2


async def test_keys_are_per_project() -> None:
    async with asgi_client(auth_settings()) as (client, app):
        admin: AdminService = app.state.runtime.control.admin
        organization = app.state.runtime.control.local_principal.organization_id
        key_a = bearer(await make_key(app, project=(await admin.create_project(organization, "a")).id))
        key_b = bearer(await make_key(app, project=(await admin.create_project(organization, "b")).id))
        same_project = bearer(await make_key(app, project="a"))

        theirs = await client.post(CHAT_PATH, json=CHAT, headers=keyed("shared", key_a))
        ours = await client.post(CHAT_PATH, json=CHAT, headers=keyed("shared", key_b))
        ours_other_body = await client.post(CHAT_PATH, json=OTHER_CHAT, headers=keyed("shared-2", key_b))
        replay_in_a = await client.post(CHAT_PATH, json=CHAT, headers=keyed("shared", same_project))

        assert ours.status_code == 200 and "idempotent-replayed" not in ours.headers
        assert ours.json()["id"] != theirs.json()["id"]
        assert ours_other_body.status_code == 200
        assert_replay_of(replay_in_a, theirs)  # another key of project A shares A's idempotency keys
        assert generations(app) == 3


async def test_an_expired_record_is_treated_as_new() -> None:
    async with asgi_client(echo_settings(idempotency=IdempotencySettings(ttl_s=1))) as (client, app):
        first = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-ttl"))
        assert_replay_of(await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-ttl")), first)
        await asyncio.sleep(2.1)  # records live ttl_s, rounded up to the next whole second
        again = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-ttl"))
        await asyncio.sleep(2.1)
        another_body = await client.post(CHAT_PATH, json=OTHER_CHAT, headers=keyed("k-ttl"))

        assert again.status_code == 200 and "idempotent-replayed" not in again.headers
        assert again.json()["id"] != first.json()["id"]
        assert another_body.status_code == 200
        assert generations(app) == 3


@pytest.mark.parametrize("length", [0, 256, 1000])
async def test_a_key_of_the_wrong_length_is_400(length: int) -> None:
    async with asgi_client(echo_settings()) as (client, app):
        response = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k" * length))

        assert response.status_code == 400
        assert response.json()["error"]["param"] == "Idempotency-Key"
        assert generations(app) == 0


async def test_a_key_of_255_characters_works() -> None:
    async with asgi_client(echo_settings()) as (client, _):
        first = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k" * 255))
        assert_replay_of(await client.post(CHAT_PATH, json=CHAT, headers=keyed("k" * 255)), first)


async def test_an_unauthenticated_request_is_401_and_claims_nothing() -> None:
    async with asgi_client(auth_settings()) as (client, app):
        refused = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-auth", bearer("pk-nonsense")))
        unscoped = await client.post(
            CHAT_PATH, json=CHAT, headers=keyed("k-auth", bearer(await make_key(app, scopes=[Scope.MODELS_READ])))
        )
        allowed = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-auth", bearer(await make_key(app))))

        assert refused.status_code == 401 and unscoped.status_code == 403
        assert allowed.status_code == 200 and "idempotent-replayed" not in allowed.headers


async def test_admin_routes_ignore_the_header_and_never_store_secrets() -> None:
    async with asgi_client(auth_settings()) as (client, app):
        admin_key = await make_key(app, scopes=[Scope.KEYS_ADMIN])
        headers = keyed("k-admin", bearer(admin_key))
        first = await client.post("/v1/admin/keys", json={"project": "default"}, headers=headers)
        second = await client.post("/v1/admin/keys", json={"project": "default"}, headers=headers)

        assert first.status_code == second.status_code == 201
        assert first.json()["id"] != second.json()["id"]
        service: IdempotencyService = app.state.runtime.idempotency
        assert await service.lookup(app.state.runtime.control.local_principal.project_id, "k-admin") is None


async def test_two_instances_sharing_a_database_run_a_key_once(database_url: str, database_schema: str | None) -> None:
    settings = echo_settings(database_url=database_url, database_schema=database_schema, **SLOW)
    async with asgi_client(settings) as (client_a, app_a), asgi_client(settings) as (client_b, app_b):
        first = asyncio.create_task(client_a.post(CHAT_PATH, json=CHAT, headers=keyed("k-shared")))
        await wait_until(lambda: generations(app_a) == 1)
        busy = await client_b.post(CHAT_PATH, json=CHAT, headers=keyed("k-shared"))
        done = await first
        replay = await client_b.post(CHAT_PATH, json=CHAT, headers=keyed("k-shared"))
        reused = await client_b.post(CHAT_PATH, json=OTHER_CHAT, headers=keyed("k-shared"))

        assert busy.json()["error"]["code"] == "idempotency_key_in_progress"
        assert_replay_of(replay, done)
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
        assert (generations(app_a), generations(app_b)) == (1, 0)
        await app_b.state.runtime.control.meter.recorder.flush()
        assert await billed_requests(client_a) == 1


async def test_a_claim_whose_owner_died_is_taken_over_after_lock_s() -> None:
    settings = echo_settings(idempotency=IdempotencySettings(lock_s=0.5))
    async with asgi_client(settings) as (client, app):
        # Another process claimed the key for this very request, then died before answering.
        service: IdempotencyService = app.state.runtime.idempotency
        fingerprint = request_fingerprint("POST", CHAT_PATH, "", orjson.dumps(CHAT))
        dead = await service.claim(app.state.runtime.control.local_principal.project_id, "k-dead", fingerprint)
        assert not isinstance(dead, StoredResponse)

        busy = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-dead"))
        await asyncio.sleep(0.6)
        taken_over = await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-dead"))

        assert busy.json()["error"]["code"] == "idempotency_key_in_progress"
        assert taken_over.status_code == 200 and "idempotent-replayed" not in taken_over.headers
        # The dead owner's late writes no longer apply: the new response stays.
        assert not await service.complete(dead, StoredResponse(500, [], b"late"))
        await service.release(dead)
        assert_replay_of(await client.post(CHAT_PATH, json=CHAT, headers=keyed("k-dead")), taken_over)
        assert generations(app) == 1


async def test_a_client_that_leaves_mid_stream_releases_the_key() -> None:
    body = {**CHAT, "stream": True}
    with live_server(echo_settings(tokens_per_second=20)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            async with http.stream("POST", CHAT_PATH, json=body, headers=keyed("k-left")) as response:
                lines = response.aiter_lines()
                while not (await anext(lines)).startswith("data: "):
                    pass
            # Left after the first event; a retry (after Retry-After while the server notices) runs again.
            deadline = time.monotonic() + 10
            while (retry := await http.post(CHAT_PATH, json=body, headers=keyed("k-left"))).status_code == 409:
                assert time.monotonic() < deadline, "the key stayed claimed after the client left"
                await asyncio.sleep(0.1)
            replay = await http.post(CHAT_PATH, json=body, headers=keyed("k-left"))

        assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
        assert sse_events(retry.text)[-1] == "[DONE]"
        assert_replay_of(replay, retry)
        assert generations(server.app) == 2


def files_on_disk(settings: Settings) -> list[Path]:
    root = settings.files_directory
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


async def test_an_upload_streamed_to_disk_is_stored_once_per_key() -> None:
    settings = echo_settings(max_body_bytes=1024)  # far below the upload: it streams through unbuffered
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "echo"}}\n'

    async def upload(client: httpx.AsyncClient, content: bytes) -> httpx.Response:
        files = {"file": ("requests.jsonl", content, "application/jsonl")}
        return await client.post("/v1/files", files=files, data={"purpose": "batch"}, headers=keyed("k-upload"))

    async with asgi_client(settings) as (client, _):
        concurrent = await asyncio.gather(*(upload(client, line * 1000) for _ in range(5)))
        replay = await upload(client, line * 1000)
        another_file = await upload(client, line * 1001)

        created = [r for r in concurrent if r.status_code == 200 and "idempotent-replayed" not in r.headers]
        assert len(created) == 1
        for response in concurrent:
            if response is not created[0] and response.status_code == 200:
                assert_replay_of(response, created[0])
            elif response is not created[0]:
                assert response.json()["error"]["code"] == "idempotency_key_in_progress"
        assert_replay_of(replay, created[0])
        # httpx drew a new multipart boundary for the retry: the same upload all the same.
        assert replay.request.headers["content-type"] != created[0].request.headers["content-type"]
        assert another_file.json()["error"]["code"] == "idempotency_key_reused"
        listed = (await client.get("/v1/files")).json()["data"]
        assert [file["id"] for file in listed] == [created[0].json()["id"]]
        assert [path.name for path in files_on_disk(settings)] == [created[0].json()["id"]]  # no partial left


async def test_a_retried_job_creation_returns_the_same_job() -> None:
    async with asgi_client(echo_settings()) as (client, _):
        body = {"type": "chat.completion", "request": CHAT}
        first = await client.post("/v1/jobs", json=body, headers=keyed("k-job"))
        replay = await client.post("/v1/jobs", json=body, headers=keyed("k-job"))

        assert first.status_code == 202
        assert_replay_of(replay, first)
        assert replay.headers["location"] == f"/v1/jobs/{first.json()['id']}"
        listed = (await client.get("/v1/jobs")).json()["data"]
        assert [job["id"] for job in listed] == [first.json()["id"]]
