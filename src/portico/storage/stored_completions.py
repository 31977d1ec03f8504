"""Queries for stored chat completions. Callers own the session and its commit; every query filters on the
project, so another project's completion is simply not found."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from portico.storage.paging import Order, Page, page
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
) -> Page[StoredCompletion]:
    """Oldest first (or newest with ``order="desc"``); ``models`` (any of) and every ``metadata`` pair must match."""
    in_project = StoredCompletion.project_id == project_id
    query = select(StoredCompletion).where(in_project)
    if models:
        query = query.where(StoredCompletion.model.in_(models))
    for key, value in metadata.items():
        # JSON_EXTRACT on SQLite, ->> on PostgreSQL.
        query = query.where(StoredCompletion.completion_metadata[key].as_string() == value)
    by_creation = [StoredCompletion.created_at, StoredCompletion.id]
    return await page(session, query, key=by_creation, scope=in_project, limit=limit, after=after, order=order)


async def delete_completion(session: AsyncSession, project_id: str, completion_id: str) -> bool:
    result = await session.execute(
        delete(StoredCompletion).where(StoredCompletion.id == completion_id, StoredCompletion.project_id == project_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
