"""Queries of idempotency records. Callers own the session and its commit.

A record is written by compare-and-set: updates and deletes name the version they saw (its status, its
``locked_until`` and its ``expires_at``), so of two processes racing for one record exactly one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from portico.constants import IdempotencyStatus
from portico.storage.resources import IdempotencyRecord


@dataclass(frozen=True, slots=True)
class RecordVersion:
    """What a writer saw of a record; its write applies only if the record is still this version."""

    status: str
    locked_until: float
    expires_at: int


def version_of(record: IdempotencyRecord) -> RecordVersion:
    return RecordVersion(record.status, record.locked_until, record.expires_at)


async def get_record(session: AsyncSession, project_id: str, key: str) -> IdempotencyRecord | None:
    return await session.get(IdempotencyRecord, (project_id, key))


def add_record(session: AsyncSession, record: IdempotencyRecord) -> None:
    """The claim: its commit raises ``IntegrityError`` when the project already has a record for the key."""
    session.add(record)


async def replace_record(
    session: AsyncSession, project_id: str, key: str, seen: RecordVersion, values: dict[str, Any]
) -> bool:
    """Overwrite the record if it is still the version ``seen``; whether it was."""
    statement = (
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.project_id == project_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.status == seen.status,
            IdempotencyRecord.locked_until == seen.locked_until,
            IdempotencyRecord.expires_at == seen.expires_at,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(await session.execute(statement)) == 1


async def complete_record(
    session: AsyncSession,
    project_id: str,
    key: str,
    *,
    locked_until: float,
    response_status: int,
    response_headers: list[list[str]],
    response_body: bytes,
    expires_at: int,
) -> bool:
    """Store the response on the claim that holds ``locked_until``; False if that claim is gone (taken over)."""
    statement = (
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.project_id == project_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.status == IdempotencyStatus.IN_PROGRESS,
            IdempotencyRecord.locked_until == locked_until,
        )
        .values(
            status=IdempotencyStatus.COMPLETED,
            response_status=response_status,
            response_headers=response_headers,
            response_body=response_body,
            expires_at=expires_at,
        )
        .execution_options(synchronize_session=False)
    )
    return _rowcount(await session.execute(statement)) == 1


async def delete_claim(session: AsyncSession, project_id: str, key: str, *, locked_until: float) -> None:
    """Drop the claim that holds ``locked_until`` (a completed record, or another owner's claim, stays)."""
    await session.execute(
        delete(IdempotencyRecord)
        .where(
            IdempotencyRecord.project_id == project_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.status == IdempotencyStatus.IN_PROGRESS,
            IdempotencyRecord.locked_until == locked_until,
        )
        .execution_options(synchronize_session=False)
    )


async def delete_expired(session: AsyncSession, *, now: float, limit: int) -> int:
    """Delete up to ``limit`` records whose time has passed; how many were deleted."""
    expired = (
        select(IdempotencyRecord.project_id, IdempotencyRecord.key)
        .where(IdempotencyRecord.expires_at <= now)
        .limit(limit)
    )
    statement = (
        delete(IdempotencyRecord)
        .where(tuple_(IdempotencyRecord.project_id, IdempotencyRecord.key).in_(expired))
        .execution_options(synchronize_session=False)
    )
    return _rowcount(await session.execute(statement))


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)
