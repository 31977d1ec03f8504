"""Both clients against a real Portico (echo model, auth on): every namespace answers with typed objects, and
the server's errors arrive as the typed exceptions with their request id, code, param and retryable."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from portico_client import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    Portico,
)
from portico_client.types import Batch, ChatCompletion, CreatedApiKey, Job, Page, Turn
from tests.conftest import ECHO_ALIAS, ECHO_SNAPSHOT
from tests.portico_client.support import Mode, Sdk, portico_server, sdk_for

MODES: list[Mode] = ["sync", "async"]
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.mark.parametrize("mode", MODES)
async def test_chat_completions_models_and_tokenize(mode: Mode) -> None:
    with portico_server() as (server, key):
        async with sdk_for(mode, f"{server.url}/v1", api_key=key) as sdk:
            answer = await sdk(lambda client: client.chat.completions.create(model=ECHO_ALIAS, messages=HELLO))
            completion = await sdk(lambda client: client.completions.create(model=ECHO_ALIAS, prompt="a b c"))
            models = await sdk(lambda client: client.models.list())
            model = await sdk(lambda client: client.models.retrieve(ECHO_ALIAS))
            counted = await sdk(lambda client: client.tokenize(model=ECHO_ALIAS, messages=HELLO))

    assert isinstance(answer, ChatCompletion)
    assert answer.id.startswith("chatcmpl-")
    assert (answer.model, answer.choices[0].message.content) == (ECHO_SNAPSHOT, "hello there")
    assert answer.usage is not None and answer.usage.completion_tokens == 2
    assert completion.choices[0].text == "a b c"
    assert [entry.id for entry in models.data] == [ECHO_ALIAS]
    assert model.snapshot == ECHO_SNAPSHOT
    assert "chat" in model.capabilities
    assert counted.count == answer.usage.prompt_tokens


@pytest.mark.parametrize("mode", MODES)
async def test_server_errors_arrive_as_typed_exceptions(mode: Mode) -> None:
    with portico_server() as (server, key):
        async with (
            sdk_for(mode, f"{server.url}/v1", api_key=key) as sdk,
            sdk_for(mode, f"{server.url}/v1", api_key="") as anonymous,
        ):
            with pytest.raises(NotFoundError) as missing_model:
                await sdk(lambda client: client.chat.completions.create(model="nope", messages=HELLO))
            with pytest.raises(BadRequestError) as bad_value:
                await sdk(lambda client: client.chat.completions.create(model=ECHO_ALIAS, messages=HELLO, top_p=7.0))
            with pytest.raises(BadRequestError) as no_embeddings:
                await sdk(lambda client: client.embeddings.create(model=ECHO_ALIAS, input="x"))
            with pytest.raises(AuthenticationError) as no_key:
                await anonymous(lambda client: client.models.list())

    assert (missing_model.value.status_code, missing_model.value.code) == (404, "model_not_found")
    assert missing_model.value.retryable is False
    assert missing_model.value.request_id is not None and missing_model.value.request_id.startswith("req_")
    assert (bad_value.value.code, bad_value.value.param) == ("invalid_request", "top_p")
    assert (no_embeddings.value.code, no_embeddings.value.param) == ("unsupported_parameter", "model")
    assert (no_key.value.status_code, no_key.value.code) == (401, "missing_api_key")


@pytest.mark.parametrize("mode", MODES)
async def test_a_job_is_created_waited_for_and_followed(mode: Mode) -> None:
    request = {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": "one two three"}]}
    with portico_server() as (server, key):
        async with sdk_for(mode, f"{server.url}/v1", api_key=key) as sdk:
            created = await sdk(lambda client: client.jobs.create(type="chat.completion", request=request))
            finished = await sdk(lambda client: client.jobs.wait(created.id))
            events = await sdk.collect(await sdk(lambda client: client.jobs.events(created.id)))
            listed = await sdk(lambda client: client.jobs.list(status="succeeded"))
            with pytest.raises(ConflictError) as too_late:
                await sdk(lambda client: client.jobs.cancel(created.id))

    assert isinstance(created, Job) and created.status == "queued"
    assert isinstance(finished, Job) and finished.finished
    assert finished.status == "succeeded"
    assert finished.result is not None
    assert finished.result["choices"][0]["message"]["content"] == "one two three"
    assert [event.event for event in events][:2] == ["queued", "started"]
    assert events[-1].event == "completed"
    assert events[-1].data["result"] == finished.result
    assert [job.id for job in listed.data] == [created.id]
    assert too_late.value.code == "conflict"


async def _finished_batch(sdk: Sdk, batch_id: str) -> Batch:
    deadline = time.monotonic() + 20
    while True:
        batch: Batch = await sdk(lambda client: client.batches.get(batch_id))
        if batch.status not in {"validating", "in_progress", "finalizing"}:
            return batch
        assert time.monotonic() < deadline, f"the batch stayed {batch.status}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", MODES)
async def test_files_and_batches(mode: Mode) -> None:
    body = {"model": ECHO_ALIAS, "messages": HELLO}
    line = {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": body}
    with portico_server() as (server, key):
        async with sdk_for(mode, f"{server.url}/v1", api_key=key) as sdk:
            uploaded = await sdk(
                lambda client: client.files.create(file=json.dumps(line).encode() + b"\n", filename="in.jsonl")
            )
            content = await sdk(lambda client: client.files.content(uploaded.id))
            batch = await sdk(
                lambda client: client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions")
            )
            batches = await sdk(lambda client: client.batches.list())
            finished = await _finished_batch(sdk, batch.id)
            output = await sdk(lambda client: client.files.content(finished.output_file_id))
            with pytest.raises(ConflictError):
                await sdk(lambda client: client.batches.cancel(batch.id))
            files = await sdk(lambda client: client.files.list(purpose="batch"))

    assert (uploaded.filename, uploaded.purpose, uploaded.bytes) == ("in.jsonl", "batch", len(content))
    assert json.loads(content) == line
    assert (batch.status, batch.input_file_id, batch.endpoint) == ("validating", uploaded.id, "/v1/chat/completions")
    assert [entry.id for entry in batches.data] == [batch.id]
    assert (finished.request_counts.completed, finished.request_counts.failed) == (1, 0)
    result = json.loads(output)
    assert result["custom_id"] == "q1"
    assert result["response"]["body"]["choices"][0]["message"]["content"] == "hello there"
    assert [entry.id for entry in files.data] == [uploaded.id]


@pytest.mark.parametrize("mode", MODES)
async def test_conversations_keep_the_history(mode: Mode) -> None:
    with portico_server() as (server, key):
        async with sdk_for(mode, f"{server.url}/v1", api_key=key) as sdk:
            conversation = await sdk(lambda client: client.conversations.create(model=ECHO_ALIAS, system="Be brief."))
            turn = await sdk(lambda client: client.conversations.messages.create(conversation.id, content="first"))
            stream = await sdk(
                lambda client: client.conversations.messages.create(conversation.id, content="second turn", stream=True)
            )
            chunks = await sdk.collect(stream)
            history = await sdk(lambda client: client.conversations.messages.list(conversation.id))
            totals = await sdk(lambda client: client.conversations.get(conversation.id))
            deleted = await sdk(lambda client: client.conversations.delete(conversation.id))
            with pytest.raises(NotFoundError):
                await sdk(lambda client: client.conversations.get(conversation.id))

    assert isinstance(turn, Turn)
    assert (turn.role, turn.content, turn.conversation_id) == ("assistant", "first", conversation.id)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == "second turn"
    final = chunks[-1].model_dump()
    assert final["conversation_id"] == conversation.id
    assert stream.usage is not None and stream.usage.completion_tokens == 2
    assert [(message.role, message.content) for message in history.data] == [
        ("user", "first"),
        ("assistant", "first"),
        ("user", "second turn"),
        ("assistant", "second turn"),
    ]
    assert history.data[-1].id == final["message_id"]
    assert totals.usage.completion_tokens == 3
    assert deleted.deleted


@pytest.mark.parametrize("mode", MODES)
async def test_admin_keys_and_usage(mode: Mode) -> None:
    with portico_server() as (server, admin_key):
        async with sdk_for(mode, f"{server.url}/v1", api_key=admin_key) as admin:
            created = await admin(lambda client: client.admin.keys.create(project="default", name="app"))
            async with sdk_for(mode, f"{server.url}/v1", api_key=created.value) as app:
                await app(lambda client: client.chat.completions.create(model=ECHO_ALIAS, messages=HELLO))
                with pytest.raises(PermissionDeniedError) as no_scope:
                    await app(lambda client: client.usage.get())
            rotated = await admin(lambda client: client.admin.keys.rotate(created.id, grace_period_s=0))
            keys = await admin(lambda client: client.admin.keys.list())
            revoked = await admin(lambda client: client.admin.keys.revoke(created.id))
            usage = await admin(lambda client: client.usage.get(group_by="model"))
            async with sdk_for(mode, f"{server.url}/v1", api_key=rotated.value) as revoked_app:
                with pytest.raises(AuthenticationError) as refused:
                    await revoked_app(lambda client: client.models.list())

    assert isinstance(created, CreatedApiKey)
    assert created.value.startswith(f"pk-{created.id}-")
    assert sorted(created.scopes) == ["inference", "models:read"]
    assert no_scope.value.code == "insufficient_scope"
    assert rotated.id == created.id and rotated.value != created.value
    assert created.id in [key.id for key in keys.data]
    assert revoked.revoked_at is not None
    assert usage.totals.requests >= 1
    assert [bucket.key for bucket in usage.buckets] == [ECHO_SNAPSHOT]
    assert refused.value.code == "revoked_api_key"


def test_the_api_key_and_base_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with portico_server() as (server, key):
        monkeypatch.setenv("PORTICO_API_KEY", key)
        monkeypatch.setenv("PORTICO_BASE_URL", f"{server.url}/v1")
        with Portico() as client:
            page = client.models.list()

    assert isinstance(page, Page)
    assert [model.id for model in page.data] == [ECHO_ALIAS]


def test_fields_a_newer_server_adds_are_kept() -> None:
    body: dict[str, Any] = {"id": "x", "created": 1, "model": "m", "choices": [], "brand_new": {"a": 1}}
    completion = ChatCompletion.model_validate(body)
    assert completion.model_dump()["brand_new"] == {"a": 1}
