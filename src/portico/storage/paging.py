"""Cursor pages of rows (projects, keys, jobs, files, batches): ordered by ``created_at`` then ``id``, resumed
after an id."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import ColumnElement, Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from portico.storage.models import ApiKey, Project
from portico.storage.resources import Batch, File, Job

Row = TypeVar("Row", Project, ApiKey, Job, File, Batch)


async def page(
    session: AsyncSession,
    query: Select[Row],
    model: type[Row],
    *,
    scope: ColumnElement[bool],
    limit: int,
    after: str | None,
    descending: bool = False,
) -> list[Row]:
    """Up to ``limit + 1`` rows (the extra one tells ``has_more``), after the row ``after``.

    ``after`` must name a row within ``scope`` (the caller's project or organization); any other is ignored, so
    it reveals nothing about other tenants.
    """
    if after is not None:
        cursor_query = select(model.created_at, model.id).where(model.id == after, scope)
        cursor = (await session.execute(cursor_query)).first()
        if cursor is not None:
            position = tuple_(model.created_at, model.id)
            query = query.where(position < tuple(cursor) if descending else position > tuple(cursor))
    if descending:
        query = query.order_by(model.created_at.desc(), model.id.desc())
    else:
        query = query.order_by(model.created_at, model.id)
    # unique(): keys load their project and tier by joins.
    return list((await session.scalars(query.limit(limit + 1))).unique().all())
