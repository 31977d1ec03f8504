"""Queries for batches: the API's (always by project) and the runner's (claims and leases).

A runner's writes are conditional on its lease (``lease_owner``): a runner that lost its batch — its lease lapsed
and another took over, or the row was erased — changes nothing. Callers own the session and its commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Result, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portico.constants import BatchStatus
from portico.storage.paging import Page, page
from portico.storage.resources import Batch

# Statuses a runner works on: it validates, runs, finalizes, or winds down a cancelled batch.
ACTIVE_STATUSES = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING)
CANCELLABLE_STATUSES = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)


def _changed(result: Result[Any]) -> bool:
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def get_batch(session: AsyncSession, project_id: str, batch_id: str) -> Batch | None:
    query = select(Batch).where(Batch.id == batch_id, Batch.project_id == project_id)
    return (await session.execute(query)).scalar_one_or_none()


async def list_batches(session: AsyncSession, project_id: str, *, limit: int, after: str | None) -> Page[Batch]:
    in_project = Batch.project_id == project_id
    key = [Batch.created_at, Batch.id]
    return await page(session, select(Batch).where(in_project), key=key, scope=in_project, limit=limit, after=after)


async def request_cancel(session: AsyncSession, project_id: str, batch_id: str, now: int) -> bool:
    """Move a validating or running batch to ``cancelling``; False if it was in no such state."""
    result = await session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.project_id == project_id, Batch.status.in_(CANCELLABLE_STATUSES))
        .values(status=BatchStatus.CANCELLING, cancelling_at=now)
    )
    return _changed(result)


# -- the runner's ----------------------------------------------------------------------------------------
async def claimable(session: AsyncSession, now: float, limit: int) -> Sequence[Batch]:
    """Oldest first: active batches nobody holds, or whose holder's lease lapsed (it died)."""
    query = (
        select(Batch)
        .where(Batch.status.in_(ACTIVE_STATUSES))
        .where(or_(Batch.lease_owner.is_(None), Batch.lease_expires_at < now))
        .order_by(Batch.created_at, Batch.id)
        .limit(limit)
    )
    return (await session.scalars(query)).all()


async def claim(session: AsyncSession, batch_id: str, owner: str, now: float, until: float) -> bool:
    """Take the batch until ``until`` if it is still free (compare-and-set: of several runners, exactly one wins)."""
    result = await session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(ACTIVE_STATUSES))
        .where(or_(Batch.lease_owner.is_(None), Batch.lease_expires_at < now))
        .values(lease_owner=owner, lease_expires_at=until)
    )
    return _changed(result)


async def held(session: AsyncSession, batch_id: str, owner: str) -> Batch | None:
    query = select(Batch).where(Batch.id == batch_id, Batch.lease_owner == owner)
    return (await session.execute(query)).scalar_one_or_none()


async def update_held(session: AsyncSession, batch_id: str, owner: str, *statuses: str, **values: Any) -> bool:
    """Set ``values`` on the batch if this owner still holds it (and it is in one of ``statuses``, if given)."""
    query = update(Batch).where(Batch.id == batch_id, Batch.lease_owner == owner)
    if statuses:
        query = query.where(Batch.status.in_(statuses))
    return _changed(await session.execute(query.values(**values)))


async def exists(session: AsyncSession, batch_id: str) -> bool:
    return (await session.scalar(select(Batch.id).where(Batch.id == batch_id))) is not None
