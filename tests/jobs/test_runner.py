"""The job runner: leases, re-runs after a worker dies, lost leases, graceful hand-back, no double runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select, update

from portico.jobs.context import WorkerContext
from portico.jobs.runner import JobRunner
from portico.storage.database import Database
from portico.storage.resources import Job, JobEvent
from tests.conftest import asgi_client, auth_settings, bearer, make_key
from tests.jobs.support import WORDS, chat_job, job_settings, parse_sse, wait_for_job, wait_for_progress


@asynccontextmanager
async def running(app: FastAPI, *, drain_s: float = 5.0, owner: str | None = None) -> AsyncIterator[JobRunner]:
    """A runner of its own over the app's services (the app itself has no in-process worker)."""
    context = WorkerContext(
        app.state.settings, app.state.runtime.control.database, app.state.runtime.control, app.state.runtime.pipeline
    )
    if owner is not None:
        context = WorkerContext(context.settings, context.database, context.control, context.generation, owner)
    runner = JobRunner(context, drain_s=drain_s)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.close()


async def _set(app: FastAPI, job_id: str, **values: Any) -> None:
    database: Database = app.state.runtime.control.database
    async with database.session() as session:
        await session.execute(update(Job).where(Job.id == job_id).values(**values))
        await session.commit()


async def _row(app: FastAPI, job_id: str) -> Job:
    database: Database = app.state.runtime.control.database
    async with database.session() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def _event_types(app: FastAPI, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    database: Database = app.state.runtime.control.database
    async with database.session() as session:
        rows = await session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        return [(row.type, row.data) for row in rows]


async def test_the_job_of_a_worker_that_died_is_run_again_from_the_start(
    database_url: str, database_schema: str | None
) -> None:
    settings = job_settings(worker=False, database_url=database_url, database_schema=database_schema)
    async with asgi_client(settings) as (client, app):
        job_id = (await client.post("/v1/jobs", json=chat_job())).json()["id"]
        # As a worker that died mid-job leaves it: running, its first attempt's output half written, no renewals.
        lapsed = time.time() - 1
        await _set(app, job_id, status="running", lease_owner="dead-host:1:x", lease_expires_at=lapsed, attempts=1)
        await _set(app, job_id, partial_output='["one two "]', progress_tokens=2)
        async with running(app):
            job = await wait_for_job(client, job_id)
        events = await _event_types(app, job_id)

    assert job["status"] == "succeeded"
    assert job["attempts"] == 2
    assert job["result"]["choices"][0]["message"]["content"] == "one two three four five six"
    assert [data["attempt"] for kind, data in events if kind == "started"] == [2]


async def test_after_its_last_attempt_a_lapsed_job_fails_as_worker_lost() -> None:
    async with asgi_client(job_settings(worker=False, jobs={"max_attempts": 2})) as (client, app):
        job_id = (await client.post("/v1/jobs", json=chat_job())).json()["id"]
        lapsed = time.time() - 1
        await _set(app, job_id, status="running", lease_owner="dead-host:1:x", lease_expires_at=lapsed, attempts=2)
        async with running(app):
            job = await wait_for_job(client, job_id)
        events = parse_sse((await client.get(f"/v1/jobs/{job_id}/events")).text)

    assert job["status"] == "failed"
    assert job["error"]["error"]["code"] == "worker_lost"
    assert job["error"]["error"]["retryable"] is True
    assert job["result"] is None
    assert events[-1].event == "failed"


async def test_a_worker_that_lost_its_lease_cannot_finish_the_job() -> None:
    async with asgi_client(job_settings(tokens_per_second=25, worker=False)) as (client, app):
        job_id = (await client.post("/v1/jobs", json=chat_job(WORDS))).json()["id"]
        async with running(app):
            await wait_for_progress(client, job_id, 2)
            # Another worker took the job over (this one looked dead to it).
            await _set(app, job_id, lease_owner="other-host:2:y", lease_expires_at=time.time() + 60)
            await asyncio.sleep(2.0)  # past the time the whole answer takes
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
        row = await _row(app, job_id)
        events = await _event_types(app, job_id)

    assert job["status"] == "running"
    assert job["result"] is None
    assert row.lease_owner == "other-host:2:y"
    assert "completed" not in [kind for kind, _ in events]


async def test_closing_a_worker_hands_its_running_jobs_back_to_the_queue() -> None:
    async with asgi_client(job_settings(tokens_per_second=10, worker=False)) as (client, app):
        job_id = (await client.post("/v1/jobs", json=chat_job(WORDS))).json()["id"]
        async with running(app, drain_s=0.2):
            await wait_for_progress(client, job_id, 2)
        handed_back = (await client.get(f"/v1/jobs/{job_id}")).json()
        async with running(app):
            finished = await wait_for_job(client, job_id, timeout_s=30)
        events = await _event_types(app, job_id)

    assert handed_back["status"] == "queued"
    assert handed_back["attempts"] == 0 and handed_back["partial_output"] is None
    assert finished["status"] == "succeeded" and finished["attempts"] == 1
    assert finished["result"]["choices"][0]["message"]["content"] == WORDS
    assert ("queued", "worker_stopping") in [(kind, data.get("reason")) for kind, data in events]


async def test_two_workers_never_run_a_job_twice(database_url: str, database_schema: str | None) -> None:
    settings = job_settings(worker=False, database_url=database_url, database_schema=database_schema)
    async with asgi_client(settings) as (client, app):
        job_ids = [(await client.post("/v1/jobs", json=chat_job(f"job {n}"))).json()["id"] for n in range(12)]
        async with running(app, owner="worker-a"), running(app, owner="worker-b"):
            jobs = [await wait_for_job(client, job_id) for job_id in job_ids]
        owners = {(await _row(app, job_id)).lease_owner for job_id in job_ids}
        started = [[kind for kind, _ in await _event_types(app, job_id)].count("started") for job_id in job_ids]

    assert {job["status"] for job in jobs} == {"succeeded"}
    assert {job["attempts"] for job in jobs} == {1}
    assert started == [1] * 12
    assert owners <= {"worker-a", "worker-b"}


async def test_a_job_refused_by_a_rate_limit_waits_in_the_queue_instead_of_failing() -> None:
    settings = auth_settings(jobs={"poll_interval_s": 0.05})
    async with asgi_client(settings) as (client, app):
        key = bearer(await make_key(app, limits={"requests_per_minute": 1}))
        first = (await client.post("/v1/jobs", json=chat_job(), headers=key)).json()["id"]
        assert (await wait_for_job(client, first, headers=key))["status"] == "succeeded"
        second = (await client.post("/v1/jobs", json=chat_job(), headers=key)).json()["id"]
        await asyncio.sleep(0.5)
        job = (await client.get(f"/v1/jobs/{second}", headers=key)).json()
        events = await _event_types(app, second)

    assert job["status"] == "queued"
    assert job["attempts"] == 0 and job["error"] is None
    requeued = [data for kind, data in events if kind == "queued" and "reason" in data]
    assert requeued and requeued[0]["reason"] == "requests_per_minute"
    assert requeued[0]["retry_after"] > 0
