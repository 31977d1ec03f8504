"""/v1/batches with the in-process runner and the echo engine: lifecycle, bad lines, cancel, expiry, the key's
limits, restarts, project isolation and scopes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from portico.auth.keys import parse_key
from portico.constants import Scope
from portico.services.admin import AdminService
from portico.settings import JobsSettings, Settings
from portico.storage.database import Database
from portico.storage.resources import Batch
from tests.api.test_files import upload
from tests.conftest import asgi_client, auth_settings, bearer, echo_settings, make_key

CHAT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "cancelled", "expired"}


def batch_settings(*, pace: float = 0.0, concurrency: int = 4, **overrides: Any) -> Settings:
    """Echo settings whose runner polls often and notices a cancel within 0.5 s; ``pace`` is the echo engine's
    tokens per second (0: no wait)."""
    jobs = JobsSettings(poll_interval_s=0.05, lease_s=1.5, batch_concurrency=concurrency)
    return echo_settings(tokens_per_second=pace, parallel_slots=8, jobs=jobs, **overrides)


def chat_line(custom_id: str | None, words: str = "hello there", **body: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "method": "POST",
        "url": CHAT,
        "body": {"model": "echo", "messages": [{"role": "user", "content": words}], "max_tokens": 8, **body},
    }
    if custom_id is not None:
        line["custom_id"] = custom_id
    return line


def jsonl(lines: list[dict[str, Any] | str]) -> bytes:
    return b"".join((line.encode() if isinstance(line, str) else orjson.dumps(line)) + b"\n" for line in lines)


async def create_batch(
    client: httpx.AsyncClient,
    lines: list[dict[str, Any] | str],
    *,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    uploaded = await upload(client, jsonl(lines), headers=headers)
    assert uploaded.status_code == 200, uploaded.text
    body = {"input_file_id": uploaded.json()["id"], "endpoint": CHAT, "completion_window": "24h", **fields}
    created = await client.post("/v1/batches", json=body, headers=headers)
    assert created.status_code == 200, created.text
    batch: dict[str, Any] = created.json()
    return batch


async def wait_for(
    client: httpx.AsyncClient,
    batch_id: str,
    done: Any = lambda batch: batch["status"] in TERMINAL,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = (await client.get(f"/v1/batches/{batch_id}", headers=headers)).json()
        if done(batch):
            return batch
        assert time.monotonic() < deadline, f"batch did not get there in time: {batch}"
        await asyncio.sleep(0.05)


async def result_lines(
    client: httpx.AsyncClient, file_id: str | None, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    response = await client.get(f"/v1/files/{file_id}/content", headers=headers)
    assert response.status_code == 200
    return [orjson.loads(line) for line in response.content.splitlines()]


def counts(batch: dict[str, Any]) -> tuple[int, int, int]:
    request_counts = batch["request_counts"]
    return request_counts["total"], request_counts["completed"], request_counts["failed"]


@pytest.fixture
async def served(database_url: str, database_schema: str | None) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    async with asgi_client(batch_settings(database_url=database_url, database_schema=database_schema)) as pair:
        yield pair


async def test_a_batch_answers_every_line_in_its_output_file(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    lines: list[dict[str, Any] | str] = [chat_line(f"req-{n}", f"say {n}") for n in range(5)]
    created = await create_batch(client, lines, metadata={"run": "nightly"})
    assert created["id"].startswith("batch_")
    assert (created["object"], created["status"], created["endpoint"]) == ("batch", "validating", CHAT)
    assert created["metadata"] == {"run": "nightly"}
    assert created["expires_at"] == created["created_at"] + 24 * 3600

    batch = await wait_for(client, created["id"])
    assert batch["status"] == "completed"
    assert counts(batch) == (5, 5, 0)
    assert batch["in_progress_at"] and batch["finalizing_at"] and batch["completed_at"]
    assert batch["cancelled_at"] is None and batch["error_file_id"] is None and batch["errors"] is None

    output = (await client.get(f"/v1/files/{batch['output_file_id']}")).json()
    assert (output["purpose"], output["filename"]) == ("batch_output", f"{batch['id']}_output.jsonl")
    results = await result_lines(client, batch["output_file_id"])
    assert sorted(line["custom_id"] for line in results) == [f"req-{n}" for n in range(5)]
    for line in results:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        response = line["response"]
        assert response["status_code"] == 200 and response["request_id"].startswith("req_")
        assert response["body"]["object"] == "chat.completion"
        number = line["custom_id"].removeprefix("req-")
        assert response["body"]["choices"][0]["message"]["content"] == f"say {number}"
    assert [b["id"] for b in (await client.get("/v1/batches")).json()["data"]] == [batch["id"]]

    # Each line is a request of its own in the key's usage.
    deadline = time.monotonic() + 10
    while True:
        usage = (await client.get("/v1/usage", params={"group_by": "endpoint"})).json()
        if usage["totals"]["requests"] >= 5 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert [(b["key"], b["requests"]) for b in usage["buckets"]] == [(CHAT, 5)]


async def test_bad_lines_are_answered_in_the_error_file(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    lines: list[dict[str, Any] | str] = [
        chat_line("good"),
        "{not json",
        chat_line(None),  # no custom_id
        {**chat_line("get"), "method": "GET"},
        {**chat_line("elsewhere"), "url": "/v1/completions"},
        chat_line("unknown-model", model="nope"),
        chat_line("bad-max-tokens", max_tokens=0),
        "   ",  # blank lines are skipped, not counted
    ]
    batch = await wait_for(client, (await create_batch(client, lines))["id"])
    assert batch["status"] == "completed"
    assert counts(batch) == (7, 1, 6)
    assert [line["custom_id"] for line in await result_lines(client, batch["output_file_id"])] == ["good"]

    errors = await result_lines(client, batch["error_file_id"])
    by_code = {line["error"]["code"]: line for line in errors}
    assert set(by_code) == {
        "invalid_json_line",
        "invalid_request_line",
        "mismatched_endpoint",
        "model_not_found",
        "invalid_request",
    }
    assert by_code["invalid_json_line"]["custom_id"] is None and by_code["invalid_json_line"]["error"]["line"] == 2
    invalid = sorted(
        (line["custom_id"] or "", line["error"]["line"])
        for line in errors
        if line["error"]["code"] == "invalid_request_line"
    )
    assert invalid == [("", 3), ("get", 4)]
    assert by_code["mismatched_endpoint"]["custom_id"] == "elsewhere"
    for code, custom_id, status in [
        ("model_not_found", "unknown-model", 404),
        ("invalid_request", "bad-max-tokens", 400),
    ]:
        line = by_code[code]
        assert (line["custom_id"], line["response"]["status_code"]) == (custom_id, status)
        assert line["response"]["body"]["error"]["code"] == code  # the envelope the endpoint would answer
    assert all(by_code[code]["response"] is None for code in ("invalid_json_line", "mismatched_endpoint"))


async def test_an_unusable_input_fails_the_batch(client: httpx.AsyncClient) -> None:
    duplicated = await create_batch(client, [chat_line("same"), chat_line("other"), chat_line("same")])
    failed = await wait_for(client, duplicated["id"])
    assert (failed["status"], failed["output_file_id"], failed["error_file_id"]) == ("failed", None, None)
    assert failed["failed_at"] is not None
    [error] = failed["errors"]["data"]
    assert (error["code"], error["line"], error["param"]) == ("duplicate_custom_id", 3, "custom_id")

    empty = await create_batch(client, ["", "  "])
    failed = await wait_for(client, empty["id"])
    assert (failed["status"], failed["errors"]["data"][0]["code"]) == ("failed", "empty_file")


async def test_create_checks_the_input_file_and_fields(client: httpx.AsyncClient) -> None:
    file_id = (await upload(client, jsonl([chat_line("a")]))).json()["id"]

    async def create(**fields: Any) -> httpx.Response:
        body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **fields}
        return await client.post("/v1/batches", json=body)

    unknown = await create(input_file_id="file-nope")
    assert (unknown.status_code, unknown.json()["error"]["param"]) == (404, "file_id")
    assert (await create(endpoint="/v1/moderations")).status_code == 400
    assert (await create(completion_window="1h")).status_code == 400
    assert (await create(metadata={"k": "v" * 600})).status_code == 400
    assert (await client.get("/v1/batches/batch_nope")).status_code == 404


async def test_cancel_stops_new_lines_and_keeps_the_answered_ones() -> None:
    async with asgi_client(batch_settings(pace=20, concurrency=1)) as (client, _):
        lines: list[dict[str, Any] | str] = [chat_line(f"req-{n}", "one two three four") for n in range(20)]
        created = await create_batch(client, lines)
        await wait_for(client, created["id"], lambda batch: batch["request_counts"]["completed"] >= 1)

        cancelling = await client.post(f"/v1/batches/{created['id']}/cancel")
        assert cancelling.status_code == 200
        assert cancelling.json()["status"] in ("cancelling", "cancelled")
        assert cancelling.json()["cancelling_at"] is not None
        batch = await wait_for(client, created["id"])
        assert batch["status"] == "cancelled" and batch["cancelled_at"] is not None
        total, completed, failed = counts(batch)
        assert total == 20 and 1 <= completed < 20 and completed + failed == 20

        answered = await result_lines(client, batch["output_file_id"])
        not_run = await result_lines(client, batch["error_file_id"])
        assert len(answered) == completed and len(not_run) == failed
        assert {line["error"]["code"] for line in not_run} == {"batch_cancelled"}
        assert sorted(line["custom_id"] for line in answered + not_run) == sorted(f"req-{n}" for n in range(20))

        again = await client.post(f"/v1/batches/{created['id']}/cancel")
        assert (again.status_code, again.json()["status"]) == (200, "cancelled")
        finished = await wait_for(client, (await create_batch(client, [chat_line("x")]))["id"])
        too_late = await client.post(f"/v1/batches/{finished['id']}/cancel")
        assert (too_late.status_code, too_late.json()["error"]["code"]) == (409, "conflict")


async def test_a_batch_past_its_window_expires_with_partial_results() -> None:
    async with asgi_client(batch_settings(pace=20, concurrency=1)) as (client, app):
        lines: list[dict[str, Any] | str] = [chat_line(f"req-{n}", "one two three four") for n in range(20)]
        created = await create_batch(client, lines)
        await wait_for(client, created["id"], lambda batch: batch["request_counts"]["completed"] >= 1)
        database: Database = app.state.runtime.control.database
        async with database.session() as session:
            await session.execute(update(Batch).where(Batch.id == created["id"]).values(expires_at=int(time.time())))
            await session.commit()

        batch = await wait_for(client, created["id"])
        assert batch["status"] == "expired" and batch["expired_at"] is not None
        total, completed, failed = counts(batch)
        assert total == 20 and completed >= 1 and completed + failed == 20
        not_run = await result_lines(client, batch["error_file_id"])
        assert {line["error"]["code"] for line in not_run} == {"batch_expired"}
        assert len(await result_lines(client, batch["output_file_id"])) == completed


async def test_lines_the_keys_limits_turn_away_wait_and_run_later() -> None:
    async with asgi_client(batch_settings(concurrency=4, auth={"enabled": True})) as (client, app):
        # One request every 50 ms: lines started together are turned away (429) and must wait, not fail.
        key = bearer(
            await make_key(
                app,
                scopes=[Scope.FILES_WRITE, Scope.FILES_READ, Scope.JOBS_WRITE, Scope.JOBS_READ, Scope.INFERENCE],
                limits={"requests_per_minute": 1200, "request_burst": 1},
            )
        )
        lines: list[dict[str, Any] | str] = [chat_line(f"req-{n}") for n in range(8)]
        batch = await wait_for(client, (await create_batch(client, lines, headers=key))["id"], headers=key)
        assert (batch["status"], counts(batch)) == ("completed", (8, 8, 0))
        assert len(await result_lines(client, batch["output_file_id"], key)) == 8


async def test_lines_run_as_the_key_as_it_is_now() -> None:
    async with asgi_client(batch_settings(pace=20, concurrency=1, auth={"enabled": True})) as (client, app):
        plaintext = await make_key(app)
        key = bearer(plaintext)
        lines: list[dict[str, Any] | str] = [chat_line(f"req-{n}", "one two three four") for n in range(10)]
        created = await create_batch(client, lines, headers=key)
        await wait_for(client, created["id"], lambda b: b["request_counts"]["completed"] >= 1, headers=key)
        admin: AdminService = app.state.runtime.control.admin
        parts = parse_key(plaintext)
        assert parts is not None
        await admin.revoke_key(app.state.runtime.control.local_principal.organization_id, parts.key_id)

        admin_key = bearer(await make_key(app))
        batch = await wait_for(client, created["id"], headers=admin_key)
        assert batch["status"] == "completed"
        errors = await result_lines(client, batch["error_file_id"], admin_key)
        assert errors and {line["error"]["code"] for line in errors} == {"revoked_api_key"}
        assert {line["response"]["status_code"] for line in errors} == {401}
        assert counts(batch)[1] + len(errors) == 10


async def test_a_restarted_server_resumes_without_running_answered_lines_again(
    tmp_path: Path, database_url: str, database_schema: str | None
) -> None:
    settings = batch_settings(pace=20, concurrency=2, database_url=database_url, database_schema=database_schema)
    lines: list[dict[str, Any] | str] = [chat_line(f"req-{n}", "one two three four") for n in range(12)]
    async with asgi_client(settings) as (client, _):
        created = await create_batch(client, lines)
        before = await wait_for(client, created["id"], lambda batch: batch["request_counts"]["completed"] >= 3)
        assert before["status"] == "in_progress"
    [partial] = list(settings.files_directory.glob(f"*/{created['id']}_output.jsonl"))
    kept = partial.read_bytes()
    assert kept.count(b"\n") >= 3
    with partial.open("ab") as torn:  # a crash mid-write leaves half a line
        torn.write(b'{"id": "batch_req_x", "custom_id": "req-11", "respo')

    async with asgi_client(settings) as (client, _):
        batch = await wait_for(client, created["id"])
        assert (batch["status"], counts(batch)) == ("completed", (12, 12, 0))
        download = await client.get(f"/v1/files/{batch['output_file_id']}/content")
        assert download.content.startswith(kept)  # lines answered before the restart were kept, not run again
        custom_ids = [orjson.loads(line)["custom_id"] for line in download.content.splitlines()]
        assert sorted(custom_ids) == sorted(f"req-{n}" for n in range(12))  # each exactly once


async def test_erasing_the_project_mid_batch_leaves_none_of_its_results_behind() -> None:
    settings = batch_settings(pace=20, concurrency=1)
    async with asgi_client(settings) as (client, app):
        created = await create_batch(client, [chat_line(f"req-{n}", "one two three four") for n in range(20)])
        await wait_for(client, created["id"], lambda batch: batch["request_counts"]["completed"] >= 1)
        project_id = app.state.runtime.control.local_principal.project_id
        assert (await client.delete(f"/v1/projects/{project_id}/data")).json()["deleted"]["batches"] == 1

        project_directory = settings.files_directory / project_id

        def leftovers() -> list[Path]:
            return list(project_directory.iterdir()) if project_directory.exists() else []

        deadline = time.monotonic() + 10  # the runner notices at its next lease renewal (0.5 s here)
        while leftovers() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert leftovers() == []
        assert (await client.get(f"/v1/batches/{created['id']}")).status_code == 404
        assert (await client.get("/v1/files")).json()["data"] == []


async def test_the_input_of_an_unfinished_batch_cannot_be_deleted() -> None:
    async with asgi_client(batch_settings(pace=20, concurrency=1)) as (client, _):
        created = await create_batch(client, [chat_line(f"req-{n}", "one two three four") for n in range(10)])
        refused = await client.delete(f"/v1/files/{created['input_file_id']}")
        assert (refused.status_code, refused.json()["error"]["code"]) == (409, "conflict")
        assert created["id"] in refused.json()["error"]["message"]
        await client.post(f"/v1/batches/{created['id']}/cancel")
        await wait_for(client, created["id"])
        assert (await client.delete(f"/v1/files/{created['input_file_id']}")).status_code == 200


async def test_another_projects_batch_is_404_on_every_route(database_url: str, database_schema: str | None) -> None:
    settings = batch_settings(auth={"enabled": True}, database_url=database_url, database_schema=database_schema)
    async with asgi_client(settings) as (client, app):
        admin: AdminService = app.state.runtime.control.admin
        other_project = await admin.create_project(app.state.runtime.control.local_principal.organization_id, "other")
        owner = bearer(await make_key(app))
        stranger = bearer(await make_key(app, project=other_project.id))
        created = await create_batch(client, [chat_line("a")], headers=owner)

        for method, path in [("GET", f"/v1/batches/{created['id']}"), ("POST", f"/v1/batches/{created['id']}/cancel")]:
            response = await client.request(method, path, headers=stranger)
            assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found"), path
        assert (await client.get("/v1/batches", headers=stranger)).json()["data"] == []
        borrowed = {"input_file_id": created["input_file_id"], "endpoint": CHAT, "completion_window": "24h"}
        response = await client.post("/v1/batches", json=borrowed, headers=stranger)
        assert response.status_code == 404

        batch = await wait_for(client, created["id"], headers=owner)
        assert batch["status"] == "completed"
        for file_id in (batch["output_file_id"], batch["input_file_id"]):
            assert (await client.get(f"/v1/files/{file_id}/content", headers=stranger)).status_code == 404


async def test_creating_needs_jobs_write_and_inference_reading_jobs_read() -> None:
    async with asgi_client(auth_settings()) as (client, app):
        uploader = bearer(await make_key(app, scopes=[Scope.FILES_WRITE]))
        file_id = (await upload(client, jsonl([chat_line("a")]), headers=uploader)).json()["id"]
        body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}

        no_inference = bearer(await make_key(app, scopes=[Scope.JOBS_WRITE]))
        refused = await client.post("/v1/batches", json=body, headers=no_inference)
        assert (refused.status_code, refused.json()["error"]["required_scope"]) == (403, "inference")
        reader = bearer(await make_key(app, scopes=[Scope.JOBS_READ, Scope.INFERENCE]))
        refused = await client.post("/v1/batches", json=body, headers=reader)
        assert (refused.status_code, refused.json()["error"]["required_scope"]) == (403, "jobs:write")

        creator = bearer(await make_key(app, scopes=[Scope.JOBS_WRITE, Scope.INFERENCE]))
        created = await client.post("/v1/batches", json=body, headers=creator)
        assert created.status_code == 200
        assert (await client.get(f"/v1/batches/{created.json()['id']}", headers=creator)).status_code == 403
        assert (await client.get(f"/v1/batches/{created.json()['id']}", headers=reader)).status_code == 200
