"""Files of a project: upload (streamed to disk, bounded), list, read, delete. Another project's file is 404."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy import select

from portico.constants import PREFIX_FILE, BatchStatus, FilePurpose, new_id
from portico.errors import Conflict, InvalidRequest, NotFound
from portico.storage import files as queries
from portico.storage.database import Database
from portico.storage.files import FileStore, StagedFile
from portico.storage.paging import Order, Page
from portico.storage.resources import Batch, File

logger = logging.getLogger("portico.files")

UPLOAD_PURPOSES = frozenset({FilePurpose.BATCH.value})
MAX_FILENAME_CHARS = 255
# A batch reads its input file until it has answered every line.
UNFINISHED_BATCH = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING)


def file_not_found(file_id: str) -> NotFound:
    return NotFound(f"No file '{file_id}' in this project. GET /v1/files lists its files.", param="file_id")


class FileService:
    def __init__(self, database: Database, store: FileStore, *, max_bytes: int) -> None:
        self.database = database
        self.store = store
        self.max_bytes = max_bytes

    async def stage(self, project_id: str) -> StagedFile:
        """A new file of the project to write an upload into (at most ``files.max_bytes``)."""
        return await self.store.stage(project_id, new_id(PREFIX_FILE), max_bytes=self.max_bytes)

    async def create(self, project_id: str, staged: StagedFile, *, filename: str, purpose: str) -> File:
        """Commit an uploaded file: its bytes are renamed into place, then its row makes it visible."""
        if purpose not in UPLOAD_PURPOSES:
            await staged.discard()
            raise InvalidRequest(
                f"Unsupported purpose '{purpose}'. Upload batch input files with purpose 'batch'.", param="purpose"
            )
        await staged.commit()
        row = File(
            id=staged.relative.rsplit("/", 1)[1],
            project_id=project_id,
            filename=Path(filename).name[:MAX_FILENAME_CHARS] or "upload.jsonl",
            purpose=purpose,
            bytes=staged.size,
            path=staged.relative,
            created_at=int(time.time()),
        )
        try:
            async with self.database.session() as session:
                session.add(row)
                await session.commit()
        except BaseException:
            await self.store.remove(staged.relative)
            raise
        return row

    async def get(self, project_id: str, file_id: str) -> File:
        async with self.database.session() as session:
            found = await queries.get_file(session, project_id, file_id)
        if found is None:
            raise file_not_found(file_id)
        return found

    async def list(
        self, project_id: str, *, purpose: str | None, limit: int, after: str | None, order: Order
    ) -> Page[File]:
        async with self.database.session() as session:
            return await queries.list_files(session, project_id, purpose=purpose, limit=limit, after=after, order=order)

    async def content(self, project_id: str, file_id: str) -> tuple[File, Path]:
        """The file and where its bytes are."""
        found = await self.get(project_id, file_id)
        return found, self.store.path(found.path)

    async def delete(self, project_id: str, file_id: str) -> File:
        """Delete the file (409 while an unfinished batch reads it as its input)."""
        async with self.database.session() as session:
            found = await queries.get_file(session, project_id, file_id)
            if found is None:
                raise file_not_found(file_id)
            reader = await session.scalar(
                select(Batch.id)
                .where(Batch.project_id == project_id, Batch.input_file_id == file_id)
                .where(Batch.status.in_(UNFINISHED_BATCH))
                .limit(1)
            )
            if reader is not None:
                raise Conflict(
                    f"The file '{file_id}' is the input of batch '{reader}', which has not finished. Cancel the "
                    "batch (POST /v1/batches/{id}/cancel) or wait for it to finish, then delete the file.",
                    param="file_id",
                )
            await queries.mark_deleted(session, project_id, file_id)
            await session.commit()
        await self.store.remove(found.path)
        return found
