"""Usage records are written off the request path, and none is lost when the server shuts down."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from portico.settings import UsageSettings
from portico.storage.database import Database
from portico.storage.models import UsageRecord
from tests.conftest import ECHO_ALIAS, asgi_client, echo_settings


async def _count(settings_database: str) -> int:
    database = Database(settings_database)
    try:
        async with database.session() as session:
            return int((await session.execute(select(func.count()).select_from(UsageRecord))).scalar_one())
    finally:
        await database.close()


async def test_records_wait_in_memory_and_shutdown_writes_them_all() -> None:
    settings = echo_settings(usage=UsageSettings(flush_interval_s=3600, flush_batch=10_000))
    async with asgi_client(settings) as (client, app):
        for _ in range(7):
            response = await client.post("/v1/completions", json={"model": ECHO_ALIAS, "prompt": "a b c"})
            assert response.status_code == 200
        assert app.state.meter.recorder.pending == 7
        assert await _count(settings.database) == 0  # nothing written on the request path
    assert await _count(settings.database) == 7


async def test_a_full_batch_is_written_without_waiting_for_the_interval() -> None:
    settings = echo_settings(usage=UsageSettings(flush_interval_s=3600, flush_batch=5))
    async with asgi_client(settings) as (client, app):
        for _ in range(5):
            await client.post("/v1/completions", json={"model": ECHO_ALIAS, "prompt": "a b c"})
        recorder = app.state.meter.recorder
        for _ in range(200):
            if recorder.pending == 0 and await _count(settings.database) == 5:
                break
            await asyncio.sleep(0.01)
        assert await _count(settings.database) == 5
