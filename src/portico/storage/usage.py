"""Queries of usage records: writing a batch of them, and summing them per model, key, endpoint or day."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, RowMapping, case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from portico.storage.models import UsageRecord

UsageGroupBy = Literal["model", "key", "endpoint", "day", "outcome"]

_GROUP_COLUMNS = {
    "model": UsageRecord.model,
    "key": UsageRecord.key_id,
    "endpoint": UsageRecord.endpoint,
    "day": UsageRecord.day,
    "outcome": UsageRecord.outcome,  # a content policy's action; null: none
}


@dataclass(frozen=True)
class UsageTotals:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    cancelled: int  # how many of the requests were cancelled (the client went away or cancelled the job)


@dataclass(frozen=True)
class UsageBucket(UsageTotals):
    key: str | None  # the model name, key id (None: requests without a key), endpoint or YYYY-MM-DD day


@dataclass(frozen=True)
class UsageSummary:
    totals: UsageTotals
    buckets: list[UsageBucket]  # ordered by key; empty without a group_by


async def insert_usage(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add records (keys: UsageRecord's columns but ``id``) in one executemany INSERT; the caller commits."""
    if rows:
        # render_nulls: rows that leave different columns NULL still go in one executemany, not one per run of rows.
        statement = insert(UsageRecord).execution_options(render_nulls=True)
        await session.execute(statement, [dict(row) for row in rows])


async def summarize_usage(
    session: AsyncSession,
    *,
    organization_id: str,
    project_ids: Sequence[str] | None,
    start: float | None,
    end: float | None,
    group_by: UsageGroupBy | None,
) -> UsageSummary:
    """Sum the organization's usage in ``[start, end)`` (either open), of the given projects (None: all of them)."""
    conditions: list[ColumnElement[bool]] = [UsageRecord.organization_id == organization_id]
    if project_ids is not None:
        conditions.append(UsageRecord.project_id.in_(project_ids))
    if start is not None:
        conditions.append(UsageRecord.created_at >= start)
    if end is not None:
        conditions.append(UsageRecord.created_at < end)

    sums = _sum_columns()
    total_row = (await session.execute(select(*sums).where(*conditions))).one()
    totals = UsageTotals(**_totals_of(total_row._mapping))
    if group_by is None:
        return UsageSummary(totals=totals, buckets=[])

    group = _GROUP_COLUMNS[group_by]
    bucket_query = (
        select(group.label("key"), *sums).where(*conditions).group_by(group).order_by(group.asc().nulls_last())
    )
    buckets = [
        UsageBucket(key=row._mapping["key"], **_totals_of(row._mapping)) for row in await session.execute(bucket_query)
    ]
    return UsageSummary(totals=totals, buckets=buckets)


def _sum_columns() -> tuple[ColumnElement[Any], ...]:
    # COALESCE: SUM over no rows is NULL, and an empty window sums to zero.
    return (
        func.count().label("requests"),
        func.coalesce(func.sum(UsageRecord.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(UsageRecord.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(UsageRecord.cached_tokens), 0).label("cached_tokens"),
        func.coalesce(func.sum(UsageRecord.cost_usd), 0.0).label("cost_usd"),
        func.coalesce(func.sum(case((UsageRecord.cancelled, 1), else_=0)), 0).label("cancelled"),
    )


def _totals_of(row: RowMapping) -> dict[str, Any]:
    # int()/float(): PostgreSQL sums a BIGINT as a NUMERIC, which the driver returns as a Decimal.
    return {
        "requests": int(row["requests"]),
        "prompt_tokens": int(row["prompt_tokens"]),
        "completion_tokens": int(row["completion_tokens"]),
        "cached_tokens": int(row["cached_tokens"]),
        "cost_usd": float(row["cost_usd"]),
        "cancelled": int(row["cancelled"]),
    }
