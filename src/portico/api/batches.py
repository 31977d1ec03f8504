"""/v1/batches: OpenAI's Batch API. Create needs ``jobs:write`` (and ``inference``: the lines run as the key),
cancel ``jobs:write``, reading ``jobs:read``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from portico.api.deps import BatchesDep, PrincipalDep, require_json, require_scope
from portico.api.rendering import error_responses, json_response
from portico.constants import Scope
from portico.schemas.batches import (
    BatchCreateRequest,
    BatchError,
    BatchErrors,
    BatchList,
    BatchObject,
    BatchRequestCounts,
)
from portico.storage.resources import Batch

router = APIRouter(tags=["batches"], responses=error_responses(401, 403, 404))
READ = [require_scope(Scope.JOBS_READ)]
WRITE = [require_scope(Scope.JOBS_WRITE)]


def batch_object(batch: Batch) -> BatchObject:
    return BatchObject(
        id=batch.id,
        endpoint=batch.endpoint,
        errors=BatchErrors(data=[BatchError(**error) for error in batch.errors]) if batch.errors else None,
        input_file_id=batch.input_file_id,
        completion_window=batch.completion_window,
        status=batch.status,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        created_at=batch.created_at,
        in_progress_at=batch.in_progress_at,
        expires_at=batch.expires_at,
        finalizing_at=batch.finalizing_at,
        completed_at=batch.completed_at,
        failed_at=batch.failed_at,
        expired_at=batch.expired_at,
        cancelling_at=batch.cancelling_at,
        cancelled_at=batch.cancelled_at,
        request_counts=BatchRequestCounts(
            total=batch.request_total, completed=batch.request_completed, failed=batch.request_failed
        ),
        metadata=batch.batch_metadata or None,
    )


@router.post(
    "/v1/batches",
    response_model=BatchObject,
    dependencies=[*WRITE, Depends(require_json)],
    responses=error_responses(400, 415),
)
async def create_batch(body: BatchCreateRequest, principal: PrincipalDep, batches: BatchesDep) -> Response:
    """Queued as `validating`; a worker checks each line, runs them at batch priority, and writes the output
    and error files."""
    return json_response(batch_object(await batches.create(principal, body)))


@router.get("/v1/batches", response_model=BatchList, dependencies=READ)
async def list_batches(
    principal: PrincipalDep,
    batches: BatchesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> Response:
    """Oldest first; `after=last_id` fetches the next page."""
    page = await batches.list(principal.project_id, limit=limit, after=after)
    return json_response(BatchList.of([batch_object(batch) for batch in page.items], has_more=page.has_more))


@router.get("/v1/batches/{batch_id}", response_model=BatchObject, dependencies=READ)
async def get_batch(batch_id: str, principal: PrincipalDep, batches: BatchesDep) -> Response:
    return json_response(batch_object(await batches.get(principal.project_id, batch_id)))


@router.post(
    "/v1/batches/{batch_id}/cancel", response_model=BatchObject, dependencies=WRITE, responses=error_responses(409)
)
async def cancel_batch(batch_id: str, principal: PrincipalDep, batches: BatchesDep) -> Response:
    """`cancelling` at once, `cancelled` when the worker has stopped; lines already answered stay in the files."""
    return json_response(batch_object(await batches.cancel(principal.project_id, batch_id)))
