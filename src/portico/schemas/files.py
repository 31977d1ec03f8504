"""/v1/files: OpenAI's file object, its list and the answer to a delete."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from portico.schemas.lists import CursorPage


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str = Field(description="`batch` (uploaded input) or `batch_output` (a batch's output or errors).")
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileList(CursorPage[FileObject]): ...


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: Literal[True] = True
