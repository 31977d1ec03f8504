"""Cursor pages of a project's rows (files, batches): ordered by ``created_at`` then ``id``, resumed after an id."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from portico.storage.resources import Batch, File

Row = TypeVar("Row", File, Batch)


async def page(
    session: AsyncSession,
    query: Select[Row],
    model: type[Row],
    *,
    project_id: str,
    limit: int,
    after: str | None,
    descending: bool = False,
) -> list[Row]:
    """Up to ``limit + 1`` rows (the extra one tells ``has_more``), after the row ``after`` of the same project.

    An ``after`` that names no row of the project is ignored, so it reveals nothing about other projects.
    """
    if after is not None:
        cursor_query = select(model.created_at, model.id).where(model.id == after, model.project_id == project_id)
        cursor = (await session.execute(cursor_query)).first()
        if cursor is not None:
            position = tuple_(model.created_at, model.id)
            query = query.where(position < tuple(cursor) if descending else position > tuple(cursor))
    if descending:
        query = query.order_by(model.created_at.desc(), model.id.desc())
    else:
        query = query.order_by(model.created_at, model.id)
    return list((await session.scalars(query.limit(limit + 1))).all())
