"""Queries for stored chat completions. Callers own the session and its commit; every query filters on the
project, so another project's completion is simply not found."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from portico.storage.conversations import Order, keyset
from portico.storage.resources import StoredCompletion


async def get_completion(session: AsyncSession, project_id: str, completion_id: str) -> StoredCompletion | None:
    query = select(StoredCompletion).where(
        StoredCompletion.id == completion_id, StoredCompletion.project_id == project_id
    )
    return (await session.execute(query)).scalar_one_or_none()


async def list_completions(
    session: AsyncSession,
    project_id: str,
    *,
    models: Sequence[str],
    metadata: Mapping[str, str],
    limit: int,
    after: str | None,
    order: Order,
) -> list[StoredCompletion]:
    """Oldest first (or newest with ``order="desc"``); ``models`` (any of) and every ``metadata`` pair must match."""
    cursor = None
    if after is not None and (previous := await get_completion(session, project_id, after)) is not None:
        cursor = (previous.created_at, previous.id)
    query = select(StoredCompletion).where(StoredCompletion.project_id == project_id)
    if models:
        query = query.where(StoredCompletion.model.in_(models))
    for key, value in metadata.items():
        # JSON_EXTRACT on SQLite, ->> on PostgreSQL.
        query = query.where(StoredCompletion.completion_metadata[key].as_string() == value)
    page = keyset(query, [StoredCompletion.created_at, StoredCompletion.id], cursor, order, limit)
    return list((await session.scalars(page)).all())


async def delete_completion(session: AsyncSession, project_id: str, completion_id: str) -> bool:
    result = await session.execute(
        delete(StoredCompletion).where(StoredCompletion.id == completion_id, StoredCompletion.project_id == project_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
