"""The envelope of every list: OpenAI's ``{"object": "list", "data": [...]}`` (``ItemList``), and for lists that
page, ``first_id``, ``last_id`` and ``has_more`` (``CursorPage``; pass ``last_id`` as ``after`` for the next page).

Each endpoint names its own subclass (``class JobList(CursorPage[JobObject])``), so its OpenAPI schema keeps a
plain, stable name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Literal, Protocol, Self

from pydantic import BaseModel
from typing_extensions import TypeVar


class Identified(Protocol):
    @property
    def id(self) -> str: ...


ItemT = TypeVar("ItemT")
# The default is what pydantic builds the unparametrized class with (it cannot build a Protocol); every list
# schema is parametrized with its item model.
IdentifiedT = TypeVar("IdentifiedT", bound=Identified, default=Any)


class ItemList(BaseModel, Generic[ItemT]):
    object: Literal["list"] = "list"
    data: list[ItemT]


class CursorPage(ItemList[IdentifiedT], Generic[IdentifiedT]):
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, data: Sequence[IdentifiedT], *, has_more: bool) -> Self:
        """The page holding ``data``, its first and last ids taken from it."""
        return cls(
            data=list(data),
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )
