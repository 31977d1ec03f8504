"""Queries of jobs and their events. Callers own the session and its commit.

Event ids come from the table's autoincrement, and a reader resumes after the last id it saw; so for each job
the events must become visible in id order. Every writer of a job's events therefore first updates the job's
row in the same transaction (the row lock on PostgreSQL, the one writer on SQLite), and events of one job are
committed one transaction after the other, in id order.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portico.constants import JobEventType, JobStatus
from portico.storage.paging import Page, page
from portico.storage.resources import Job, JobEvent

FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def _updated(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def add_event(session: AsyncSession, job_id: str, kind: JobEventType, data: dict[str, Any]) -> None:
    session.add(JobEvent(job_id=job_id, type=kind.value, data=data, created_at=time.time()))


async def get_job(session: AsyncSession, project_id: str, job_id: str) -> Job | None:
    query = select(Job).where(Job.id == job_id, Job.project_id == project_id)
    return (await session.execute(query)).scalar_one_or_none()


def _in_status(status: JobStatus, now: float) -> ColumnElement[bool]:
    """Jobs that read as ``status`` at ``now``: a finished job past its retention reads as expired already."""
    finished = Job.status.in_([value.value for value in FINISHED])
    due = and_(finished, Job.expires_at <= now)
    if status is JobStatus.EXPIRED:
        return or_(Job.status == status.value, due)
    if status in FINISHED:
        return and_(Job.status == status.value, Job.expires_at > now)
    return Job.status == status.value


async def list_jobs(
    session: AsyncSession, project_id: str, *, status: JobStatus | None, now: float, limit: int, after: str | None
) -> Page[Job]:
    """Newest first; ``after`` is the id of the last job of the previous page (of any status)."""
    in_project = Job.project_id == project_id
    query = select(Job).where(in_project)
    if status is not None:
        query = query.where(_in_status(status, now))
    key = [Job.created_at, Job.id]
    return await page(session, query, key=key, scope=in_project, limit=limit, after=after, order="desc")


def _claimable(now: float) -> ColumnElement[bool]:
    """Queued (and not held back until later), or running under a lease that lapsed: its worker died."""
    return or_(
        and_(Job.status == JobStatus.QUEUED.value, or_(Job.lease_expires_at.is_(None), Job.lease_expires_at <= now)),
        and_(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now),
    )


async def claimable_jobs(session: AsyncSession, now: float, limit: int) -> Sequence[Job]:
    """Jobs a worker may take, in priority then arrival order. On PostgreSQL the rows stay locked until the
    transaction ends, and rows another worker is taking are skipped; each take is also a compare-and-set."""
    query = (
        select(Job)
        .where(_claimable(now))
        .order_by(Job.priority, Job.created_at, Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (await session.scalars(query)).all()


async def take_job(session: AsyncSession, job: Job, now: float, values: dict[str, Any]) -> bool:
    """Set ``values`` on ``job`` if it is still claimable as it was read (no other worker took it meanwhile)."""
    query = (
        update(Job)
        .where(Job.id == job.id, Job.status == job.status, Job.attempts == job.attempts, _claimable(now))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return _updated(await session.execute(query)) == 1


async def update_owned(session: AsyncSession, job_id: str, owner: str, values: dict[str, Any]) -> bool:
    """Set ``values`` on a running job only while ``owner`` holds its lease: a worker that lost it writes nothing."""
    query = (
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.RUNNING.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return _updated(await session.execute(query)) == 1


async def renew_leases(session: AsyncSession, job_ids: Collection[str], owner: str, until: float) -> None:
    query = (
        update(Job)
        .where(Job.id.in_(job_ids), Job.lease_owner == owner, Job.status == JobStatus.RUNNING.value)
        .values(lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    await session.execute(query)


async def watched(session: AsyncSession, job_ids: Collection[str], owner: str) -> tuple[set[str], set[str]]:
    """Of running jobs: those still owned by ``owner``, and of those, the ones whose cancellation was asked."""
    query = select(Job.id, Job.cancel_requested).where(
        Job.id.in_(job_ids), Job.lease_owner == owner, Job.status == JobStatus.RUNNING.value
    )
    rows = (await session.execute(query)).all()
    return {row.id for row in rows}, {row.id for row in rows if row.cancel_requested}


async def request_cancel(session: AsyncSession, project_id: str, job_id: str) -> bool:
    """Flag a running job for its worker; True if it was running."""
    query = (
        update(Job)
        .where(Job.id == job_id, Job.project_id == project_id, Job.status == JobStatus.RUNNING.value)
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    return _updated(await session.execute(query)) == 1


async def finish_queued(session: AsyncSession, project_id: str, job_id: str, values: dict[str, Any]) -> bool:
    """Finish a job that has not started (cancelled before any worker took it); False if it is not queued."""
    query = (
        update(Job)
        .where(Job.id == job_id, Job.project_id == project_id, Job.status == JobStatus.QUEUED.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return _updated(await session.execute(query)) == 1


async def times_queued(session: AsyncSession, job_id: str) -> int:
    """How many times the job entered the queue: once when it was made, once more each time it was handed back."""
    query = (
        select(func.count())
        .select_from(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.type == JobEventType.QUEUED.value)
    )
    return int(await session.scalar(query) or 0)


async def events_after(session: AsyncSession, job_id: str, after: int, limit: int) -> Sequence[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after).order_by(JobEvent.id).limit(limit)
    return (await session.scalars(query)).all()


async def job_status(session: AsyncSession, project_id: str, job_id: str) -> tuple[str, int | None] | None:
    """A job's status and when it expires, or None if the project has no such job."""
    query = select(Job.status, Job.expires_at).where(Job.id == job_id, Job.project_id == project_id)
    row = (await session.execute(query)).first()
    return None if row is None else (row.status, row.expires_at)


async def expirable_jobs(session: AsyncSession, now: int, limit: int) -> Sequence[str]:
    query = (
        select(Job.id)
        .where(Job.status.in_([status.value for status in FINISHED]), Job.expires_at <= now)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (await session.scalars(query)).all()


async def expire_job(session: AsyncSession, job_id: str, now: int) -> bool:
    """Erase a finished job's request, output and events; its status, usage and error stay, as ``expired``."""
    query = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_([status.value for status in FINISHED]), Job.expires_at <= now)
        .values(status=JobStatus.EXPIRED.value, request=None, result=None, partial_output=None)
        .execution_options(synchronize_session=False)
    )
    if _updated(await session.execute(query)) != 1:
        return False
    await session.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
    add_event(session, job_id, JobEventType.EXPIRED, {"job_id": job_id, "status": JobStatus.EXPIRED.value})
    return True
