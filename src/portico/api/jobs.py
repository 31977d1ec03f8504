"""/v1/jobs: create (202), read, list, cancel, and follow a job's events (SSE, resumable with Last-Event-ID)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from starlette.responses import Response

from portico.api.deps import JobsDep, PrincipalDep, SettingsDep, require_json, require_scope
from portico.api.errors import validated
from portico.api.rendering import error_responses, json_response
from portico.api.streaming import NamedEvent, last_event_id_after, sse_response
from portico.constants import HEADER_LOCATION, JobStatus, Scope
from portico.schemas.jobs import JobCreateRequest, JobList, JobObject
from portico.services.jobs import REQUEST_MODELS, JobEventView

router = APIRouter(tags=["jobs"], responses=error_responses(401, 403, 404))
READ = [require_scope(Scope.JOBS_READ)]
WRITE = [require_scope(Scope.JOBS_WRITE)]
Limit = Annotated[int, Query(ge=1, le=100)]

EVENTS_DOC = {
    "text/event-stream": {
        "schema": {"type": "string"},
        "description": "Named events, each with an `id:`: `queued`, `started`, `delta`, `heartbeat`, then one of "
        "`completed`, `failed`, `cancelled`, `expired`, after which the stream ends. Send the last id seen as "
        "`Last-Event-ID` to resume.",
    }
}


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobObject,
    dependencies=[*WRITE, Depends(require_json)],
    responses=error_responses(400, 413, 415),
)
async def create_job(body: JobCreateRequest, principal: PrincipalDep, jobs: JobsDep) -> Response:
    """Queue a chat completion, completion or embedding; a worker runs it. The job's URL is in `Location`."""
    await jobs.validate(body.type, validated(REQUEST_MODELS[body.type], body.request, "request"))
    job = await jobs.create(principal, body)
    return json_response(job, status_code=202, headers={HEADER_LOCATION: f"/v1/jobs/{job.id}"})


@router.get("/v1/jobs", response_model=JobList, dependencies=READ)
async def list_jobs(
    principal: PrincipalDep,
    jobs: JobsDep,
    limit: Limit = 20,
    after: str | None = Query(default=None, description="The last id of the previous page."),
    status: JobStatus | None = None,
) -> Response:
    """The project's jobs, newest first."""
    return json_response(await jobs.list_jobs(principal, status=status, limit=limit, after=after))


@router.get("/v1/jobs/{job_id}", response_model=JobObject, dependencies=READ)
async def get_job(job_id: str, principal: PrincipalDep, jobs: JobsDep) -> Response:
    return json_response(await jobs.get(principal, job_id))


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobObject, dependencies=WRITE, responses=error_responses(409))
async def cancel_job(job_id: str, principal: PrincipalDep, jobs: JobsDep) -> Response:
    """A queued job never starts; a running one stops at once, billed for what it used. 409 once finished."""
    return json_response(await jobs.cancel(principal, job_id))


@router.delete("/v1/jobs/{job_id}", response_model=JobObject, dependencies=WRITE, responses=error_responses(409))
async def delete_job(job_id: str, principal: PrincipalDep, jobs: JobsDep) -> Response:
    """The same as POST /v1/jobs/{job_id}/cancel."""
    return json_response(await jobs.cancel(principal, job_id))


@router.get(
    "/v1/jobs/{job_id}/events",
    dependencies=READ,
    responses={200: {"content": EVENTS_DOC}, **error_responses(400)},
)
async def job_events(
    job_id: str,
    principal: PrincipalDep,
    jobs: JobsDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="last-event-id")] = None,
) -> Response:
    after = last_event_id_after(last_event_id)
    heartbeat_s = settings.heartbeat_interval_s
    events = await jobs.events(principal, job_id, after=after, heartbeat_s=heartbeat_s)
    # The events include heartbeats of their own; the comment heartbeat only shows if reading them stalls.
    return sse_response(_named(events), heartbeat_s=2 * heartbeat_s, done_frame=False)


async def _named(events: AsyncIterator[JobEventView]) -> AsyncIterator[NamedEvent]:
    async for event in events:
        yield NamedEvent(event.type, event.data, event.id)
