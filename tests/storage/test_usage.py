from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select

from portico.storage.database import Database
from portico.storage.models import UsageRecord
from portico.storage.usage import UsageGroupBy, insert_usage, summarize_usage

DAY = 86_400
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC
PROJECTS = {"org_a": ["proj_a1", "proj_a2"], "org_b": ["proj_b1"]}
GROUP_COLUMNS = {"model": "model", "key": "key_id", "endpoint": "endpoint", "day": "day"}


def usage_row(rng: random.Random, number: int, created_at: float) -> dict[str, Any]:
    organization_id = rng.choice(["org_a", "org_a", "org_b"])
    status = rng.choice([200, 200, 200, 429, 499])
    return {
        "request_id": f"req_{number}",
        "organization_id": organization_id,
        "project_id": rng.choice(PROJECTS[organization_id]),
        "key_id": rng.choice(["key_1", "key_2", None]),
        "model": rng.choice(["echo", "smollm2", "upstream-large"]),
        "endpoint": rng.choice(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]),
        "prompt_tokens": rng.randint(1, 2000),
        "completion_tokens": rng.randint(0, 500),
        "cached_tokens": rng.randint(0, 100),
        "cost_usd": rng.uniform(0, 0.01),
        "latency_ms": rng.uniform(5, 900),
        "ttft_ms": rng.choice([None, rng.uniform(1, 80)]),
        "status": status,
        "cancelled": status == 499,
        "created_at": created_at,
        "day": datetime.fromtimestamp(created_at, UTC).strftime("%Y-%m-%d"),
    }


def usage_rows(count: int = 1000, seed: int = 7) -> list[dict[str, Any]]:
    """Records over four days, some exactly on day boundaries (the edges of the windows tested)."""
    rng = random.Random(seed)
    times = [START + day * DAY for day in range(5)] + [START + rng.uniform(0, 4 * DAY) for _ in range(count - 5)]
    return [usage_row(rng, number, created_at) for number, created_at in enumerate(times)]


def expected_summary(
    rows: Sequence[dict[str, Any]],
    *,
    organization_id: str,
    project_ids: Sequence[str] | None,
    start: float | None,
    end: float | None,
    group_by: UsageGroupBy | None,
) -> dict[str, Any]:
    selected = [
        row
        for row in rows
        if row["organization_id"] == organization_id
        and (project_ids is None or row["project_id"] in project_ids)
        and (start is None or row["created_at"] >= start)
        and (end is None or row["created_at"] < end)
    ]
    groups: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    if group_by is not None:
        for row in selected:
            groups[row[GROUP_COLUMNS[group_by]]].append(row)
    keys = sorted(groups, key=lambda key: (key is None, key or ""))
    return {"totals": totals_of(selected), "buckets": [{**totals_of(groups[key]), "key": key} for key in keys]}


def totals_of(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requests": len(rows),
        "prompt_tokens": sum(row["prompt_tokens"] for row in rows),
        "completion_tokens": sum(row["completion_tokens"] for row in rows),
        "cached_tokens": sum(row["cached_tokens"] for row in rows),
        "cost_usd": pytest.approx(sum(row["cost_usd"] for row in rows), rel=1e-9, abs=1e-12),
        "cancelled": sum(row["cancelled"] for row in rows),
    }


async def test_insert_usage_writes_a_thousand_rows_in_one_statement(database: Database) -> None:
    rows = usage_rows(1000)
    statements: list[bool] = []

    def count(*args: Any) -> None:
        statements.append(args[-1])  # before_cursor_execute's last argument: executemany

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    async with database.session() as session:
        await insert_usage(session, rows)
        await session.commit()
    event.remove(database.engine.sync_engine, "before_cursor_execute", count)

    assert statements == [True]
    async with database.session() as session:
        stored = (await session.execute(select(func.count(), func.sum(UsageRecord.prompt_tokens)))).one()
    assert tuple(stored) == (1000, sum(row["prompt_tokens"] for row in rows))


@pytest.mark.parametrize("group_by", [None, "model", "key", "endpoint", "day"])
async def test_summarize_usage_sums_per_group_and_window(database: Database, group_by: UsageGroupBy | None) -> None:
    rows = usage_rows(1000)
    async with database.session() as session:
        await insert_usage(session, rows)
        await session.commit()

    queries: list[dict[str, Any]] = [
        {"organization_id": "org_a", "project_ids": None, "start": None, "end": None},
        {"organization_id": "org_a", "project_ids": ["proj_a2"], "start": START + DAY, "end": START + 3 * DAY},
        {"organization_id": "org_b", "project_ids": None, "start": START + 2 * DAY, "end": None},
        {"organization_id": "org_a", "project_ids": ["proj_a1", "proj_b1"], "start": None, "end": START + DAY},
    ]
    async with database.session() as session:
        for query in queries:
            summary = await summarize_usage(session, **query, group_by=group_by)
            assert asdict(summary) == expected_summary(rows, **query, group_by=group_by), query
            assert summary.totals.requests > 0


async def test_summarize_usage_window_includes_start_and_excludes_end(database: Database) -> None:
    rng = random.Random(1)
    rows = [usage_row(rng, number, START + offset) for number, offset in enumerate([-1, 0, 10, DAY, DAY + 1])]
    for row in rows:
        row.update(organization_id="org_a", project_id="proj_a1")
    async with database.session() as session:
        await insert_usage(session, rows)
        await session.commit()
        summary = await summarize_usage(
            session, organization_id="org_a", project_ids=None, start=START, end=START + DAY, group_by="day"
        )
    assert summary.totals.requests == 2
    assert [(bucket.key, bucket.requests) for bucket in summary.buckets] == [("2026-01-01", 2)]


async def test_summarize_usage_of_nothing_is_zero(database: Database) -> None:
    async with database.session() as session:
        await insert_usage(session, [])
        summary = await summarize_usage(
            session, organization_id="org_none", project_ids=None, start=None, end=None, group_by="model"
        )
    assert summary.buckets == []
    assert asdict(summary.totals) == {
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "cost_usd": 0.0,
        "cancelled": 0,
    }
