"""Erasing everything a project stored, for data-deletion requests.

Removed: stored completions, conversations with their messages, jobs with their events (their inputs, partial
and final outputs), batches, files (rows and bytes on disk), idempotency records (they hold response bodies) and
webhook deliveries not yet sent (they hold job results). Kept: the project, its keys and its usage records,
which hold counts and costs but no content. A job or batch still running when its row is deleted stops at its
next lease renewal, and nothing it finishes is written back (its writes are conditional on the row).
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Result, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from portico.storage.database import Database
from portico.storage.models import Base
from portico.storage.resources import (
    Batch,
    Conversation,
    ConversationMessage,
    File,
    IdempotencyRecord,
    Job,
    JobEvent,
    StoredCompletion,
    StoredResponse,
    WebhookDelivery,
)


@dataclass(frozen=True, slots=True)
class Erased:
    stored_completions: int
    responses: int
    conversation_messages: int
    conversations: int
    job_events: int
    jobs: int
    batches: int
    files: int
    file_bytes: int
    idempotency_records: int
    webhook_deliveries: int


async def _delete(session: AsyncSession, table: type[Base], project_id: str) -> int:
    column = table.__table__.c.project_id
    return _count(await session.execute(delete(table).where(column == project_id)))


async def erase_project_data(database: Database, files_directory: Path, project_id: str) -> Erased:
    """Delete the project's stored content in one transaction, then the files' bytes; return the counts."""
    async with database.session() as session:
        conversation_ids = select(Conversation.id).where(Conversation.project_id == project_id)
        job_ids = select(Job.id).where(Job.project_id == project_id)
        file_rows = (await session.execute(select(File.path, File.bytes).where(File.project_id == project_id))).all()
        # Children first: no reliance on ON DELETE CASCADE (SQLite enforces foreign keys only when asked).
        messages = await session.execute(
            delete(ConversationMessage).where(ConversationMessage.conversation_id.in_(conversation_ids))
        )
        events = await session.execute(delete(JobEvent).where(JobEvent.job_id.in_(job_ids)))
        erased = Erased(
            stored_completions=await _delete(session, StoredCompletion, project_id),
            responses=await _delete(session, StoredResponse, project_id),
            conversation_messages=_count(messages),
            conversations=await _delete(session, Conversation, project_id),
            job_events=_count(events),
            jobs=await _delete(session, Job, project_id),
            batches=await _delete(session, Batch, project_id),
            files=await _delete(session, File, project_id),
            file_bytes=sum(row.bytes for row in file_rows),
            idempotency_records=await _delete(session, IdempotencyRecord, project_id),
            webhook_deliveries=await _delete(session, WebhookDelivery, project_id),
        )
        await session.commit()
    await asyncio.to_thread(_unlink_all, files_directory, project_id, [row.path for row in file_rows])
    return erased


def _count(result: Result[Any]) -> int:
    return int(result.rowcount)  # type: ignore[attr-defined]


def _unlink_all(directory: Path, project_id: str, paths: list[str]) -> None:
    """The files' bytes, then the project's directory (partial batch results, uploads cut short)."""
    root = directory.resolve()
    for relative in paths:
        target = (root / relative).resolve()
        if root in target.parents:  # never outside the files directory, whatever a row says
            target.unlink(missing_ok=True)
    project_directory = (root / project_id).resolve()
    if root in project_directory.parents:
        shutil.rmtree(project_directory, ignore_errors=True)


async def count_project_rows(database: Database, project_id: str) -> int:
    """Rows of stored content the project still has (0 after an erase)."""
    total = 0
    async with database.session() as session:
        tables = (StoredCompletion, StoredResponse, Conversation, Job, Batch, File, IdempotencyRecord, WebhookDelivery)
        for table in tables:
            column = table.__table__.c.project_id
            total += int((await session.execute(select(func.count()).where(column == project_id))).scalar_one())
    return total
