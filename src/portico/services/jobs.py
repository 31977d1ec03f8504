"""Jobs: a sync endpoint's body run later by a worker, with its state, its events and its end announced.

The routes create, read, list and cancel jobs and stream their events; the runner (``portico.jobs.runner``)
claims and runs them. Both finish jobs the same way: the terminal state, its event and its webhook (an outbox
row) are written in one transaction (``announce``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from portico.auth.principal import Principal
from portico.constants import PREFIX_JOB, JobEventType, JobStatus, JobType, Priority, new_id
from portico.errors import Conflict, NotFound, PorticoError
from portico.schemas.chat import ChatCompletionRequest
from portico.schemas.completions import CompletionRequest
from portico.schemas.embeddings import EmbeddingRequest
from portico.schemas.jobs import (
    JobCreateRequest,
    JobError,
    JobList,
    JobObject,
    JobPriorityName,
    JobProgress,
    JobTypeName,
)
from portico.services import webhooks
from portico.services.generation.chunks import wire_usage
from portico.services.generation.pipeline import Pipeline
from portico.services.generation.types import ENDPOINT_CHAT, ENDPOINT_COMPLETIONS, ENDPOINT_EMBEDDINGS
from portico.settings import JobsSettings
from portico.storage import jobs as store
from portico.storage.database import Database
from portico.storage.resources import Job
from portico.usage.meter import Ticket

REQUEST_MODELS: dict[str, type[BaseModel]] = {
    JobType.CHAT_COMPLETION: ChatCompletionRequest,
    JobType.COMPLETION: CompletionRequest,
    JobType.EMBEDDING: EmbeddingRequest,
}
ENDPOINTS: dict[str, str] = {
    JobType.CHAT_COMPLETION: ENDPOINT_CHAT,
    JobType.COMPLETION: ENDPOINT_COMPLETIONS,
    JobType.EMBEDDING: ENDPOINT_EMBEDDINGS,
}
PRIORITIES = {"job": Priority.JOB, "batch": Priority.BATCH}
PRIORITY_NAMES = {priority: name for name, priority in PRIORITIES.items()}
FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED})
TERMINAL_EVENTS = {
    JobStatus.SUCCEEDED: JobEventType.COMPLETED,
    JobStatus.FAILED: JobEventType.FAILED,
    JobStatus.CANCELLED: JobEventType.CANCELLED,
    JobStatus.EXPIRED: JobEventType.EXPIRED,
}
TERMINAL_EVENT_TYPES = frozenset(event.value for event in TERMINAL_EVENTS.values())
# How long a cancel of a running job waits for its worker to stop it, so the answer can say `cancelled`.
CANCEL_WAIT_S = 5.0
_CANCEL_POLL_S = 0.05
# Events read per query of an event stream.
_EVENT_PAGE = 200


@dataclass(frozen=True, slots=True)
class JobEventView:
    id: int  # the SSE id; for a heartbeat, the id of the last event sent before it
    type: str  # JobEventType
    data: dict[str, Any]


def settled_usage(ticket: Ticket | None) -> dict[str, Any] | None:
    """What a run that did not succeed was billed (None if it never got as far as admission)."""
    if ticket is None or ticket.settlement is None:
        return None
    settled = ticket.settlement
    return wire_usage(settled.usage, settled.cost_usd).model_dump()


def encode_partial(parts: list[str]) -> str:
    return json.dumps(parts)


def _is_due(job: Job, now: float) -> bool:
    """A finished job past its retention: it reads as expired even before the sweep erases it."""
    return job.status in FINISHED and job.expires_at is not None and job.expires_at <= now


def job_object(job: Job, now: float, **changes: Any) -> JobObject:
    """The wire form of ``job`` with ``changes`` (column values about to be written) applied."""

    def value(name: str) -> Any:
        return changes[name] if name in changes else getattr(job, name)

    status = JobStatus(value("status"))
    expires_at = value("expires_at")
    erased = status is JobStatus.EXPIRED or (status in FINISHED and expires_at is not None and expires_at <= now)
    partial = value("partial_output")
    error = value("error")
    return JobObject(
        id=job.id,
        type=cast(JobTypeName, job.type),
        status=JobStatus.EXPIRED.value if erased else status.value,
        priority=cast(JobPriorityName, PRIORITY_NAMES.get(Priority(job.priority), "job")),
        created_at=job.created_at,
        started_at=value("started_at"),
        finished_at=value("finished_at"),
        expires_at=expires_at,
        attempts=value("attempts"),
        cancel_requested=value("cancel_requested"),
        progress=JobProgress(completion_tokens=value("progress_tokens")),
        partial_output=json.loads(partial) if partial is not None and status is JobStatus.RUNNING else None,
        request=None if erased else value("request"),
        result=None if erased else value("result"),
        usage=value("usage"),
        error=JobError.model_validate(error) if error is not None else None,
        webhook_url=job.webhook_url,
        metadata=job.job_metadata or {},
    )


def finished_values(
    status: JobStatus,
    now: float,
    settings: JobsSettings,
    *,
    result: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The columns a job gets when it ends. The lease owner stays (which worker finished it)."""
    return {
        "status": status.value,
        "result": result,
        "usage": usage,
        "error": error,
        "partial_output": None,
        "lease_expires_at": None,
        "finished_at": int(now),
        "expires_at": int(now + settings.retention_s),
    }


def announce(session: AsyncSession, job: Job, values: dict[str, Any], now: float, running_s: float) -> None:
    """Add a job's terminal event and, if it has a webhook, its outbox row, to the transaction that ends it."""
    status = JobStatus(values["status"])
    finished = job_object(job, now, **values)
    data: dict[str, Any] = {
        "job_id": job.id,
        "status": status.value,
        "usage": finished.usage,
        "timing": {"queued_s": round(max(0.0, now - job.created_at - running_s), 3), "running_s": round(running_s, 3)},
    }
    if finished.result is not None:
        data["result"] = finished.result
    if finished.error is not None:
        data["error"] = finished.error.model_dump()
    store.add_event(session, job.id, TERMINAL_EVENTS[status], data)
    if job.webhook_url is not None:
        body = finished.model_dump()
        session.add(webhooks.delivery(job.project_id, job.webhook_url, f"job.{status.value}", body, now))


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"No job '{job_id}' exists in this project. GET /v1/jobs lists them.", param="job_id")


class JobService:
    def __init__(self, database: Database, pipeline: Pipeline, settings: JobsSettings) -> None:
        self._database = database
        self._pipeline = pipeline
        self._settings = settings

    async def validate(self, job_type: str, request: BaseModel) -> None:
        """What the sync endpoint checks before it runs (the model exists, the prompt fits, ...), so a bad job
        fails now rather than in a worker. Errors name their parameter under ``request.``."""
        try:
            if isinstance(request, ChatCompletionRequest | CompletionRequest | EmbeddingRequest):
                await self._pipeline.check(request)
        except PorticoError as exc:
            exc.param = f"request.{exc.param}" if exc.param else "request"
            raise

    async def create(self, principal: Principal, body: JobCreateRequest) -> JobObject:
        now = time.time()
        job = Job(
            id=new_id(PREFIX_JOB),
            project_id=principal.project_id,
            key_id=principal.key_id,
            type=body.type,
            status=JobStatus.QUEUED.value,
            priority=int(PRIORITIES[body.priority]),
            request=body.request,
            job_metadata=body.metadata or {},
            webhook_url=body.webhook_url,
            cancel_requested=False,
            attempts=0,
            progress_tokens=0,
            created_at=int(now),
        )
        async with self._database.session() as session:
            session.add(job)
            await session.flush()  # the job's row before its first event (the event's foreign key)
            queued = {"job_id": job.id, "status": JobStatus.QUEUED.value, "created_at": job.created_at}
            store.add_event(session, job.id, JobEventType.QUEUED, queued)
            await session.commit()
        return job_object(job, now)

    async def get(self, principal: Principal, job_id: str) -> JobObject:
        now = time.time()
        async with self._database.session() as session:
            job = await store.get_job(session, principal.project_id, job_id)
            if job is None:
                raise _not_found(job_id)
            if _is_due(job, now) and await store.expire_job(session, job.id, int(now)):
                await session.commit()
        return job_object(job, now)

    async def list_jobs(
        self, principal: Principal, *, status: JobStatus | None, limit: int, after: str | None
    ) -> JobList:
        now = time.time()
        async with self._database.session() as session:
            page = await store.list_jobs(
                session, principal.project_id, status=status, now=now, limit=limit, after=after
            )
        return JobList.of([job_object(job, now) for job in page.items], has_more=page.has_more)

    async def cancel(self, principal: Principal, job_id: str) -> JobObject:
        """A queued job ends at once and never starts; a running one is flagged, and its worker stops it within
        moments (this waits up to CANCEL_WAIT_S for that). Cancelling a cancelled job is a no-op."""
        now = time.time()
        async with self._database.session() as session:
            job = await store.get_job(session, principal.project_id, job_id)
            if job is None:
                raise _not_found(job_id)
            if job.status == JobStatus.QUEUED:
                values = finished_values(JobStatus.CANCELLED, now, self._settings) | {"cancel_requested": True}
                if await store.finish_queued(session, job.project_id, job.id, values):
                    announce(session, job, values, now, running_s=0.0)
                    await session.commit()
                    return job_object(job, now, **values)
            flagged = await store.request_cancel(session, job.project_id, job.id)
            await session.commit()
        if flagged:
            return await self._settled(principal, job_id)
        current = await self.get(principal, job_id)
        if current.status == JobStatus.CANCELLED.value:
            return current
        raise Conflict(f"Job '{job_id}' already {current.status}; only queued or running jobs can be cancelled.")

    async def _settled(self, principal: Principal, job_id: str) -> JobObject:
        deadline = time.monotonic() + CANCEL_WAIT_S
        while True:
            current = await self.get(principal, job_id)
            if current.status in FINISHED or time.monotonic() >= deadline:
                return current
            await asyncio.sleep(_CANCEL_POLL_S)

    async def events(
        self, principal: Principal, job_id: str, *, after: int, heartbeat_s: float
    ) -> AsyncIterator[JobEventView]:
        """The job's events after event id ``after``, live until its terminal event. Raises NotFound now (not
        once iterated) for another project's job."""
        now = time.time()
        async with self._database.session() as session:
            job = await store.get_job(session, principal.project_id, job_id)
            if job is None:
                raise _not_found(job_id)
            if _is_due(job, now) and await store.expire_job(session, job.id, int(now)):
                await session.commit()
        return self._follow(principal.project_id, job_id, after, heartbeat_s)

    async def _follow(self, project_id: str, job_id: str, last: int, heartbeat_s: float) -> AsyncIterator[JobEventView]:
        quiet_since = time.monotonic()
        while True:
            async with self._database.session() as session:
                # The status first: if it is final, the events read next include the terminal one.
                state = await store.job_status(session, project_id, job_id)
                rows = await store.events_after(session, job_id, last, _EVENT_PAGE)
            if state is None:
                return  # erased meanwhile
            for row in rows:
                last = row.id
                yield JobEventView(row.id, row.type, row.data)
                if row.type in TERMINAL_EVENT_TYPES:
                    return
            if rows:
                quiet_since = time.monotonic()
                if len(rows) == _EVENT_PAGE:
                    continue
            elif state[0] in FINISHED:
                return  # the client had already seen the terminal event
            if time.monotonic() - quiet_since >= heartbeat_s:
                yield JobEventView(last, JobEventType.HEARTBEAT.value, {"job_id": job_id, "status": state[0]})
                quiet_since = time.monotonic()
            await asyncio.sleep(self._settings.poll_interval_s)
