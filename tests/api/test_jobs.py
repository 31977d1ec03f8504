"""/v1/jobs over HTTP: lifecycle, validation at creation, listing, cancellation, retention, events, tenancy."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from portico.storage.database import Database
from portico.storage.models import UsageRecord
from tests.conftest import asgi_client, auth_settings, bearer, live_server, make_key
from tests.jobs.support import (
    WORDS,
    SSEEvent,
    chat_job,
    chat_request,
    job_settings,
    parse_sse,
    wait_for_job,
    wait_for_progress,
)


async def _usage_records(app: Any, job_id: str) -> list[UsageRecord]:
    await app.state.runtime.control.meter.recorder.flush()
    database: Database = app.state.runtime.control.database
    async with database.session() as session:
        return list((await session.scalars(select(UsageRecord).where(UsageRecord.request_id == job_id))).all())


async def test_a_job_runs_to_the_sync_endpoints_result_on_sqlite_and_postgresql(
    database_url: str, database_schema: str | None
) -> None:
    settings = job_settings(database_url=database_url, database_schema=database_schema)
    async with asgi_client(settings) as (client, _):
        created = await client.post("/v1/jobs", json=chat_job(metadata={"batch": "7"}))
        assert created.status_code == 202
        job_id = created.json()["id"]
        assert job_id.startswith("job_")
        assert created.headers["location"] == f"/v1/jobs/{job_id}"
        assert (created.json()["status"], created.json()["object"], created.json()["priority"]) == (
            "queued",
            "job",
            "job",
        )

        job = await wait_for_job(client, job_id)
        sync = (await client.post("/v1/chat/completions", json=chat_request())).json()
        events = parse_sse((await client.get(f"/v1/jobs/{job_id}/events")).text)

    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    assert job["metadata"] == {"batch": "7"}
    assert job["result"]["object"] == "chat.completion"
    assert job["result"]["choices"] == sync["choices"]
    assert job["result"]["usage"] == sync["usage"]
    assert job["usage"] == sync["usage"]
    assert job["usage"]["cost"] > 0
    assert job["created_at"] <= job["started_at"] <= job["finished_at"] < job["expires_at"]
    assert job["partial_output"] is None

    assert [event.event for event in events][:2] == ["queued", "started"]
    assert events[-1].event == "completed"
    assert {event.event for event in events[2:-1]} == {"delta"}
    ids = [event.id for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    text = "".join(choice["text"] for event in events[2:-1] for choice in event.data["choices"])
    assert text == sync["choices"][0]["message"]["content"]
    completed = events[-1].data
    assert completed["usage"] == sync["usage"]
    assert completed["result"]["choices"] == sync["choices"]
    assert set(completed["timing"]) == {"queued_s", "running_s"}


async def test_completion_jobs_and_batch_priority() -> None:
    async with asgi_client(job_settings()) as (client, _):
        body = {"type": "completion", "request": {"model": "echo", "prompt": "say these words"}, "priority": "batch"}
        created = await client.post("/v1/jobs", json=body)
        assert created.status_code == 202
        job = await wait_for_job(client, created.json()["id"])

    assert (job["status"], job["priority"]) == ("succeeded", "batch")
    assert job["result"]["object"] == "text_completion"
    assert job["result"]["choices"][0]["text"] == "say these words"


@pytest.mark.parametrize(
    ("request_body", "job_type", "endpoint"),
    [
        ({**chat_request(), "temperatre": 1}, "chat.completion", "/v1/chat/completions"),
        ({"model": "echo"}, "chat.completion", "/v1/chat/completions"),
        (chat_request(temperature=7), "chat.completion", "/v1/chat/completions"),
        ({**chat_request(), "model": "no-such-model"}, "chat.completion", "/v1/chat/completions"),
        (chat_request(WORDS * 10), "chat.completion", "/v1/chat/completions"),
        ({"model": "echo", "prompt": "x", "n": 0}, "completion", "/v1/completions"),
        ({"model": "echo", "input": "a text"}, "embedding", "/v1/embeddings"),
    ],
)
async def test_a_bad_request_fails_at_creation_with_the_sync_endpoints_error(
    request_body: dict[str, Any], job_type: str, endpoint: str
) -> None:
    async with asgi_client(job_settings()) as (client, _):
        sync = await client.post(endpoint, json=request_body)
        job = await client.post("/v1/jobs", json={"type": job_type, "request": request_body})
        listed = (await client.get("/v1/jobs")).json()

    assert sync.status_code >= 400
    assert job.status_code == sync.status_code
    expected, got = sync.json()["error"], job.json()["error"]
    assert (got["type"], got["code"]) == (expected["type"], expected["code"])
    assert got["param"] == f"request.{expected['param']}"
    assert listed["data"] == []  # nothing was queued


async def test_the_job_body_itself_is_validated() -> None:
    async with asgi_client(job_settings()) as (client, _):
        unknown_type = await client.post("/v1/jobs", json={"type": "image", "request": chat_request()})
        bad_url = await client.post("/v1/jobs", json=chat_job(webhook_url="ftp://example.com/x"))
        bad_priority = await client.post("/v1/jobs", json=chat_job(priority="interactive"))

    assert unknown_type.status_code == 400 and unknown_type.json()["error"]["param"] == "type"
    assert bad_url.status_code == 400 and bad_url.json()["error"]["param"] == "webhook_url"
    assert bad_priority.status_code == 400 and bad_priority.json()["error"]["param"] == "priority"


async def test_list_pages_newest_first_and_filters_by_status(database_url: str, database_schema: str | None) -> None:
    settings = job_settings(worker=False, database_url=database_url, database_schema=database_schema)
    async with asgi_client(settings) as (client, _):
        created = []
        for number in range(5):
            created.append((await client.post("/v1/jobs", json=chat_job(f"job {number}"))).json()["id"])
            await asyncio.sleep(1.01 if number == 2 else 0)  # two distinct creation seconds at least
        for job_id in created[:2]:
            assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200

        pages, after = [], None
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"after": after} if after else {})
            page = (await client.get("/v1/jobs", params=params)).json()
            pages.append(page)
            if not page["has_more"]:
                break
            after = page["last_id"]
        cancelled = (await client.get("/v1/jobs", params={"status": "cancelled"})).json()
        queued = (await client.get("/v1/jobs", params={"status": "queued"})).json()
        bad = await client.get("/v1/jobs", params={"status": "sleeping"})

    listed = [job["id"] for page in pages for job in page["data"]]
    assert [len(page["data"]) for page in pages] == [2, 2, 1]
    assert [page["has_more"] for page in pages] == [True, True, False]
    assert pages[0]["first_id"] == listed[0] and pages[0]["last_id"] == listed[1]
    assert sorted(listed) == sorted(created) and len(set(listed)) == 5
    assert set(listed[:2]) == set(created[3:])  # newest first: those made after the pause
    assert {job["id"] for job in cancelled["data"]} == set(created[:2])
    assert {job["id"] for job in queued["data"]} == set(created[2:])
    assert bad.status_code == 400


async def test_cancelling_a_queued_job_means_it_never_starts() -> None:
    async with asgi_client(job_settings(worker=False)) as (client, _):
        first = (await client.post("/v1/jobs", json=chat_job())).json()["id"]
        second = (await client.post("/v1/jobs", json=chat_job())).json()["id"]
        cancelled = await client.post(f"/v1/jobs/{first}/cancel")
        deleted = await client.delete(f"/v1/jobs/{second}")
        again = await client.post(f"/v1/jobs/{first}/cancel")

    assert cancelled.status_code == deleted.status_code == again.status_code == 200
    assert cancelled.json()["status"] == deleted.json()["status"] == "cancelled"
    assert again.json()["status"] == "cancelled"

    # A worker over the same database now finds nothing to run.
    async with asgi_client(job_settings()) as (client, _):
        await asyncio.sleep(0.3)
        for job_id in (first, second):
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            assert (job["status"], job["attempts"], job["started_at"], job["usage"]) == ("cancelled", 0, None, None)
            events = parse_sse((await client.get(f"/v1/jobs/{job_id}/events")).text)
            assert [event.event for event in events] == ["queued", "cancelled"]


async def test_cancelling_a_running_job_stops_it_and_bills_what_it_used() -> None:
    async with asgi_client(job_settings(tokens_per_second=20)) as (client, app):
        job_id = (await client.post("/v1/jobs", json=chat_job(WORDS))).json()["id"]
        await wait_for_progress(client, job_id, 3)
        cancelled = await client.post(f"/v1/jobs/{job_id}/cancel")
        await asyncio.sleep(0.3)  # had it kept generating, progress would move on
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        events = parse_sse((await client.get(f"/v1/jobs/{job_id}/events")).text)
        records = await _usage_records(app, job_id)

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert job["status"] == "cancelled" and job["result"] is None
    used = job["usage"]["completion_tokens"]
    assert 3 <= used < 40
    # It stopped: nothing was made after the cancel answered (the last piece may be billed but unseen).
    assert job["progress"] == cancelled.json()["progress"]
    assert used - 1 <= job["progress"]["completion_tokens"] <= used
    assert job["usage"]["cost"] > 0
    assert events[-1].event == "cancelled"
    assert events[-1].data["usage"] == job["usage"]
    assert len(records) == 1
    assert records[0].cancelled is True
    assert (records[0].completion_tokens, records[0].prompt_tokens) == (used, job["usage"]["prompt_tokens"])


async def test_a_finished_job_cannot_be_cancelled() -> None:
    async with asgi_client(job_settings()) as (client, _):
        job_id = (await client.post("/v1/jobs", json=chat_job())).json()["id"]
        await wait_for_job(client, job_id)
        response = await client.post(f"/v1/jobs/{job_id}/cancel")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


async def test_a_finished_job_expires_after_the_retention() -> None:
    async with asgi_client(job_settings(jobs={"retention_s": 1})) as (client, _):
        job_id = (await client.post("/v1/jobs", json=chat_job())).json()["id"]
        done = await wait_for_job(client, job_id)
        expired = await wait_for_job(client, job_id, until={"expired"}, timeout_s=5)
        events = parse_sse((await client.get(f"/v1/jobs/{job_id}/events")).text)
        listed = (await client.get("/v1/jobs")).json()["data"]
        as_expired = (await client.get("/v1/jobs", params={"status": "expired"})).json()["data"]
        as_succeeded = (await client.get("/v1/jobs", params={"status": "succeeded"})).json()["data"]

    assert done["status"] == "succeeded" and done["result"] is not None
    assert expired["result"] is None and expired["request"] is None
    assert expired["usage"] == done["usage"]  # what it cost stays on record
    assert [event.event for event in events] == ["expired"]
    assert [job["status"] for job in listed] == ["expired"]
    assert ([job["id"] for job in as_expired], as_succeeded) == ([job_id], [])


async def _read_events(http: httpx.AsyncClient, url: str, headers: dict[str, str], stop_after: int | None) -> list[Any]:
    """Events read from a live stream; with ``stop_after``, the connection is dropped after that many."""
    events: list[SSEEvent] = []
    async with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        block = ""
        async for line in response.aiter_lines():
            if line:
                block += line + "\n"
                continue
            events.extend(parse_sse(block))
            block = ""
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


async def test_a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed() -> None:
    with live_server(job_settings(tokens_per_second=25)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            job_id = (await http.post("/v1/jobs", json=chat_job(WORDS))).json()["id"]
            url = f"/v1/jobs/{job_id}/events"
            before = await _read_events(http, url, {}, stop_after=4)  # queued, started, two deltas
            await asyncio.sleep(0.3)  # events happen while disconnected
            last = str(before[-1].id)
            after = await _read_events(http, url, {"last-event-id": last}, stop_after=None)
            whole = await _read_events(http, url, {}, stop_after=None)
            bad = await http.get(url, headers={"last-event-id": "not-a-number"})

    assert [event.event for event in before] == ["queued", "started", "delta", "delta"]
    assert [event.id for event in before + after] == [event.id for event in whole]
    assert [event.data for event in before + after] == [event.data for event in whole]
    assert whole[-1].event == "completed"
    text = "".join(choice["text"] for event in whole if event.event == "delta" for choice in event.data["choices"])
    assert text == WORDS
    assert bad.status_code == 400


async def test_events_are_served_live_by_another_server_on_the_same_database(
    database_url: str, database_schema: str | None
) -> None:
    runner = job_settings(tokens_per_second=50, database_url=database_url, database_schema=database_schema)
    reader = job_settings(worker=False, database_url=database_url, database_schema=database_schema)
    async with asgi_client(runner) as (client_a, _), asgi_client(reader) as (client_b, _):
        job_id = (await client_a.post("/v1/jobs", json=chat_job(WORDS))).json()["id"]
        events = parse_sse((await client_b.get(f"/v1/jobs/{job_id}/events")).text)  # ends with the job
        job = (await client_b.get(f"/v1/jobs/{job_id}")).json()

    assert [event.event for event in events][:2] == ["queued", "started"]
    assert events[-1].event == "completed"
    assert events[-1].data["result"] == job["result"]
    deltas = [event for event in events if event.event == "delta"]
    assert len(deltas) < 40  # batched, not one event per token
    assert "".join(event.data["choices"][0]["text"] for event in deltas) == WORDS


async def test_another_projects_job_is_404_everywhere(database_url: str, database_schema: str | None) -> None:
    settings = auth_settings(database_url=database_url, database_schema=database_schema)
    settings.jobs.poll_interval_s = 0.05
    async with asgi_client(settings) as (client, app):
        mine = bearer(await make_key(app))
        other_project = (
            await app.state.runtime.control.admin.create_project(
                app.state.runtime.control.local_principal.organization_id, "b"
            )
        ).id
        theirs = bearer(await make_key(app, project=other_project))
        job_id = (await client.post("/v1/jobs", json=chat_job(), headers=mine)).json()["id"]

        responses = [
            await client.get(f"/v1/jobs/{job_id}", headers=theirs),
            await client.get(f"/v1/jobs/{job_id}/events", headers=theirs),
            await client.post(f"/v1/jobs/{job_id}/cancel", headers=theirs),
            await client.delete(f"/v1/jobs/{job_id}", headers=theirs),
        ]
        their_list = (await client.get("/v1/jobs", headers=theirs)).json()
        job = await wait_for_job(client, job_id, headers=mine)

    assert [response.status_code for response in responses] == [404, 404, 404, 404]
    assert {response.json()["error"]["code"] for response in responses} == {"not_found"}
    assert their_list["data"] == []
    assert job["status"] == "succeeded"  # the other project's cancel did nothing


async def test_the_webhook_secret_is_made_once_per_project() -> None:
    settings = auth_settings()
    async with asgi_client(settings) as (client, app):
        key = bearer(await make_key(app))
        other_project = (
            await app.state.runtime.control.admin.create_project(
                app.state.runtime.control.local_principal.organization_id, "b"
            )
        ).id
        other = bearer(await make_key(app, project=other_project))
        first = (await client.get("/v1/webhooks/secret", headers=key)).json()
        second = (await client.get("/v1/webhooks/secret", headers=key)).json()
        theirs = (await client.get("/v1/webhooks/secret", headers=other)).json()

    assert first["secret"].startswith("whsec_")
    assert first == second
    assert theirs["secret"] != first["secret"]


async def test_an_idle_event_stream_sends_heartbeat_events_with_the_last_id() -> None:
    with live_server(job_settings(worker=False, heartbeat_interval_s=0.1)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            job_id = (await http.post("/v1/jobs", json=chat_job())).json()["id"]
            events = await _read_events(http, f"/v1/jobs/{job_id}/events", {}, stop_after=3)

    queued, *heartbeats = events
    assert queued.event == "queued"
    assert [event.event for event in heartbeats] == ["heartbeat", "heartbeat"]
    assert {event.id for event in heartbeats} == {queued.id}
    assert heartbeats[0].data == {"job_id": job_id, "status": "queued"}
