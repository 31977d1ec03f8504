"""Webhooks of finished jobs, received by a real HTTP server on loopback: signed, retried, never lost."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select

from portico.services.webhooks import verify
from portico.storage.database import Database
from portico.storage.resources import WebhookDelivery
from tests.conftest import asgi_client
from tests.jobs.support import (
    WebhookReceiver,
    chat_job,
    job_settings,
    wait_for_deliveries,
    wait_for_job,
)
from tests.system.servers import free_port


async def _deliveries(database: Database) -> list[WebhookDelivery]:
    async with database.session() as session:
        return list((await session.scalars(select(WebhookDelivery))).all())


async def test_a_finished_job_posts_a_signed_webhook(database_url: str, database_schema: str | None) -> None:
    settings = job_settings(database_url=database_url, database_schema=database_schema)
    with WebhookReceiver().serving() as receiver:
        async with asgi_client(settings) as (client, _):
            secret = (await client.get("/v1/webhooks/secret")).json()["secret"]
            job_id = (await client.post("/v1/jobs", json=chat_job(webhook_url=receiver.url))).json()["id"]
            job = await wait_for_job(client, job_id)
            [delivery] = await wait_for_deliveries(receiver, 1)

    verify(secret, delivery.headers, delivery.body)
    assert delivery.headers["webhook-id"].startswith("msg_")
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.payload["type"] == "job.succeeded"
    assert delivery.payload["data"]["id"] == job_id
    assert delivery.payload["data"]["result"] == job["result"]
    assert delivery.payload["data"]["usage"]["cost"] > 0


async def test_a_cancelled_job_posts_job_cancelled() -> None:
    with WebhookReceiver().serving() as receiver:
        async with asgi_client(job_settings(worker=False)) as (client, _):
            job_id = (await client.post("/v1/jobs", json=chat_job(webhook_url=receiver.url))).json()["id"]
            await client.post(f"/v1/jobs/{job_id}/cancel")
        # Deliveries go out from a worker: here, the next server with one.
        async with asgi_client(job_settings()) as (client, _):
            secret = (await client.get("/v1/webhooks/secret")).json()["secret"]
            [delivery] = await wait_for_deliveries(receiver, 1)

    verify(secret, delivery.headers, delivery.body)
    assert (delivery.payload["type"], delivery.payload["data"]["status"]) == ("job.cancelled", "cancelled")


async def test_a_receiver_that_fails_twice_gets_the_webhook_on_the_third_attempt() -> None:
    with WebhookReceiver(fail_first=2).serving() as receiver:
        async with asgi_client(job_settings()) as (client, app):
            secret = (await client.get("/v1/webhooks/secret")).json()["secret"]
            job_id = (await client.post("/v1/jobs", json=chat_job(webhook_url=receiver.url))).json()["id"]
            attempts = await wait_for_deliveries(receiver, 3)
            await asyncio.sleep(0.3)  # no fourth attempt follows a success
            [row] = await _deliveries(app.state.runtime.control.database)

    assert len(receiver.deliveries) == 3
    assert len({attempt.headers["webhook-id"] for attempt in attempts}) == 1  # one message, three attempts
    for attempt in attempts:
        verify(secret, attempt.headers, attempt.body)
    assert attempts[-1].payload["data"]["id"] == job_id
    assert (row.attempts, row.last_error) == (3, None)
    assert row.delivered_at is not None and row.failed_at is None


async def test_a_webhook_is_given_up_after_the_last_attempt() -> None:
    settings = job_settings()
    settings.webhooks.max_attempts = 2
    with WebhookReceiver(fail_first=10).serving() as receiver:
        async with asgi_client(settings) as (client, app):
            await client.post("/v1/jobs", json=chat_job(webhook_url=receiver.url))
            await wait_for_deliveries(receiver, 2)
            await asyncio.sleep(0.5)
            [row] = await _deliveries(app.state.runtime.control.database)

    assert len(receiver.deliveries) == 2
    assert row.failed_at is not None and row.delivered_at is None
    assert row.last_error == "HTTP 500"


async def test_the_outbox_survives_a_restart_and_delivers_once() -> None:
    receiver = WebhookReceiver(port=free_port())  # nothing listens there yet: every attempt is refused
    async with asgi_client(job_settings()) as (client, app):
        job_id = (await client.post("/v1/jobs", json=chat_job(webhook_url=receiver.url))).json()["id"]
        await wait_for_job(client, job_id)
        deadline = time.monotonic() + 10
        while not (rows := await _deliveries(app.state.runtime.control.database)) or rows[0].attempts == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert rows[0].delivered_at is None and "Connect" in (rows[0].last_error or "")

    with receiver.serving():
        async with asgi_client(job_settings()) as (client, app):
            [delivery] = await wait_for_deliveries(receiver, 1)
            await asyncio.sleep(0.5)  # and no second one
            [row] = await _deliveries(app.state.runtime.control.database)

    assert len(receiver.deliveries) == 1
    assert delivery.payload["data"]["id"] == job_id
    assert row.delivered_at is not None
