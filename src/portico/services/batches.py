"""Batches as the API sees them: create (queued as ``validating``), read, list, cancel. A runner does the work
(``jobs/batches.py``). Another project's batch is 404."""

from __future__ import annotations

import time

from portico.auth.principal import Principal
from portico.constants import PREFIX_BATCH, BatchStatus, FilePurpose, Scope, new_id
from portico.errors import Conflict, InsufficientScope, InvalidRequest, NotFound
from portico.schemas.batches import BatchCreateRequest
from portico.services.files import file_not_found
from portico.storage import batches as queries
from portico.storage.database import Database
from portico.storage.files import get_file
from portico.storage.paging import Page
from portico.storage.resources import Batch

COMPLETION_WINDOWS_S = {"24h": 24 * 3600}


def batch_not_found(batch_id: str) -> NotFound:
    return NotFound(f"No batch '{batch_id}' in this project. GET /v1/batches lists its batches.", param="batch_id")


class BatchService:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(self, principal: Principal, request: BatchCreateRequest) -> Batch:
        # The lines run as this key: it must be allowed to run them (checked again, per line, as they run).
        if Scope.INFERENCE not in principal.scopes:
            raise InsufficientScope(Scope.INFERENCE)
        now = int(time.time())
        async with self.database.session() as session:
            input_file = await get_file(session, principal.project_id, request.input_file_id)
            if input_file is None:
                raise file_not_found(request.input_file_id)
            if input_file.purpose != FilePurpose.BATCH:
                raise InvalidRequest(
                    f"The file '{input_file.id}' has purpose '{input_file.purpose}'; a batch's input must be "
                    "uploaded with purpose 'batch'.",
                    param="input_file_id",
                )
            batch = Batch(
                id=new_id(PREFIX_BATCH),
                project_id=principal.project_id,
                key_id=principal.key_id,
                endpoint=request.endpoint,
                input_file_id=input_file.id,
                completion_window=request.completion_window,
                status=BatchStatus.VALIDATING,
                batch_metadata=request.metadata or {},
                created_at=now,
                expires_at=now + COMPLETION_WINDOWS_S[request.completion_window],
                request_total=0,
                request_completed=0,
                request_failed=0,
            )
            session.add(batch)
            await session.commit()
        return batch

    async def get(self, project_id: str, batch_id: str) -> Batch:
        async with self.database.session() as session:
            batch = await queries.get_batch(session, project_id, batch_id)
        if batch is None:
            raise batch_not_found(batch_id)
        return batch

    async def list(self, project_id: str, *, limit: int, after: str | None) -> Page[Batch]:
        async with self.database.session() as session:
            return await queries.list_batches(session, project_id, limit=limit, after=after)

    async def cancel(self, project_id: str, batch_id: str) -> Batch:
        """``cancelling`` until its runner stops: no new lines start, running ones are cancelled, then
        ``cancelled`` with the lines answered so far. Cancelling a cancelled batch changes nothing."""
        async with self.database.session() as session:
            await queries.request_cancel(session, project_id, batch_id, int(time.time()))
            await session.commit()
            batch = await queries.get_batch(session, project_id, batch_id)
        if batch is None:
            raise batch_not_found(batch_id)
        if batch.status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
            raise Conflict(
                f"The batch '{batch_id}' is {batch.status}: only a validating or in-progress batch can be cancelled."
            )
        return batch
