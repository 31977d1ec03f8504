"""Usage records are written off the request path, and none is lost when the server shuts down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from portico.settings import UsageSettings
from portico.storage.database import Database
from portico.storage.models import UsageRecord
from portico.usage.recorder import UsageRecorder, UsageRow
from tests.conftest import ECHO_ALIAS, asgi_client, echo_settings


async def _count(settings_database: str) -> int:
    url = settings_database if "://" in settings_database else f"sqlite+aiosqlite:///{settings_database}"
    database = Database(url)
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
        assert app.state.runtime.control.meter.recorder.pending == 7
        assert await _count(settings.database) == 0  # nothing written on the request path
    assert await _count(settings.database) == 7


async def test_a_full_batch_is_written_without_waiting_for_the_interval() -> None:
    settings = echo_settings(usage=UsageSettings(flush_interval_s=3600, flush_batch=5))
    async with asgi_client(settings) as (client, app):
        for _ in range(5):
            await client.post("/v1/completions", json={"model": ECHO_ALIAS, "prompt": "a b c"})
        recorder = app.state.runtime.control.meter.recorder
        for _ in range(200):
            if recorder.pending == 0 and await _count(settings.database) == 5:
                break
            await asyncio.sleep(0.01)
        assert await _count(settings.database) == 5


@pytest.mark.parametrize("yields", [5, 10, 30, 50])
async def test_closing_during_a_write_loses_nothing(
    tmp_path: Path, yields: int, caplog: pytest.LogCaptureFixture
) -> None:
    """close() waits for a batch being written instead of cancelling it half-way (which left SQLite locked and
    the final write failing); ``yields`` varies how far into its write the background task is."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}")
    await database.upgrade()
    recorder = UsageRecorder(database, flush_interval_s=1.0, flush_batch=500)
    recorder.start()
    for number in range(1200):
        recorder.record(_row(number))
    for _ in range(yields):
        await asyncio.sleep(0)
    await recorder.close()
    await database.close()
    assert await _count(str(tmp_path / "usage.db")) == 1200
    assert not [record for record in caplog.records if record.name == "portico.usage"], "a write failed on close"


def _row(number: int) -> UsageRow:
    return UsageRow(
        request_id=f"req_{number}",
        organization_id="org_x",
        project_id="proj_x",
        key_id=None,
        model="m",
        endpoint="/v1/completions",
        prompt_tokens=1,
        completion_tokens=1,
        cached_tokens=0,
        cost_usd=0.0,
        latency_ms=1.0,
        ttft_ms=None,
        status=200,
        cancelled=False,
        outcome=None,
        created_at=0.0,
        day="1970-01-01",
    )


async def test_held_records_are_left_to_their_job_until_released(tmp_path: Path) -> None:
    """A job's runner writes its records with the job's final state (``held``, ``forget``); the recorder writes
    only what is still held when the hold ends."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}")
    await database.upgrade()
    recorder = UsageRecorder(database, flush_interval_s=3600, flush_batch=500)
    recorder.hold("req_1")
    recorder.hold("req_2")
    for number in (0, 1, 2):
        recorder.record(_row(number))
    await recorder.flush()
    assert await _count(str(tmp_path / "usage.db")) == 1  # only req_0's
    assert [row.request_id for row in recorder.held("req_1")] == ["req_1"]

    recorder.forget("req_1", recorder.held("req_1"))  # written by the job's runner
    recorder.release("req_1")
    recorder.release("req_2")  # an attempt that did not finish its job: recorded like any request
    await recorder.flush()
    await database.close()
    assert await _count(str(tmp_path / "usage.db")) == 2
