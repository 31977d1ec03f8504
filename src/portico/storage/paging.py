"""Keyset pages, the one way every paged list of the API pages. Rows are ordered by the caller's key columns,
whose last one is the row's id (created_at then id for most resources, seq then id for a conversation's
messages); a page resumes after the row that ``after`` names, and one row more than the page is fetched to tell
``has_more``. ``page_in_memory`` applies the same rules to a list held whole.

Unlike OFFSET, a keyset page costs the same at any depth and skips or repeats nothing while rows are added.

``after`` is looked up within the caller's ``scope`` (a project, an organization, a conversation). An id that is
unknown or outside it is ignored and the first page comes back, so a cursor reveals nothing about other tenants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from sqlalchemy import ColumnElement, Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

Order = Literal["asc", "desc"]
T = TypeVar("T")
Row = TypeVar("Row")


class Identified(Protocol):
    @property
    def id(self) -> str: ...


ItemT = TypeVar("ItemT", bound=Identified)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool

    @classmethod
    def of(cls, fetched: Sequence[T], limit: int) -> Page[T]:
        """The page of rows fetched up to ``limit + 1``: the first ``limit``, and whether there was one more."""
        return cls(list(fetched[:limit]), len(fetched) > limit)


async def page(
    session: AsyncSession,
    query: Select[Row],
    *,
    key: Sequence[InstrumentedAttribute[Any]],
    scope: ColumnElement[bool],
    limit: int,
    after: str | None,
    order: Order = "asc",
) -> Page[Row]:
    """Up to ``limit`` rows of ``query`` in ``key`` order, after the row whose id (``key[-1]``) is ``after``."""
    position = tuple_(*key)
    if after is not None:
        cursor = (await session.execute(select(*key).where(key[-1] == after, scope))).first()
        if cursor is not None:
            query = query.where(position > tuple(cursor) if order == "asc" else position < tuple(cursor))
    ordering = list(key) if order == "asc" else [column.desc() for column in key]
    # unique(): an API key loads its project and tier by joins.
    rows = (await session.scalars(query.order_by(*ordering).limit(limit + 1))).unique().all()
    return Page.of(rows, limit)


def page_in_memory(items: Sequence[ItemT], *, limit: int, after: str | None, order: Order = "asc") -> Page[ItemT]:
    """The same page of a list held whole (``items`` in ascending order), such as a stored request's messages."""
    ordered = list(items) if order == "asc" else list(reversed(items))
    ids = [item.id for item in ordered]
    start = ids.index(after) + 1 if after in ids else 0
    return Page.of(ordered[start : start + limit + 1], limit)
