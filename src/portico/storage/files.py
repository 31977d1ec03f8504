"""Files: their rows, and their bytes on the local filesystem under ``<files directory>/<project id>/``.

An upload is written under a temporary name (``.<file id>.tmp``), flushed to disk, then renamed to its file id,
and only then is its row inserted: a crash never leaves a row pointing at a partial file. Callers own the
session and its commit.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portico.errors import PayloadTooLarge
from portico.storage.paging import Order, Page, page
from portico.storage.resources import File


class FileStore:
    """Where files' bytes live; every path it hands out is inside ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def project_directory(self, project_id: str) -> Path:
        return self.path(project_id)

    def path(self, relative: str) -> Path:
        target = (self.root / relative).resolve()
        if target != self.root and self.root not in target.parents:
            raise ValueError(f"'{relative}' is outside the files directory")
        return target

    async def stage(self, project_id: str, file_id: str, *, max_bytes: int) -> StagedFile:
        """A new file being written; ``commit()`` makes it ``<project id>/<file id>``, ``discard()`` drops it."""
        relative = f"{project_id}/{file_id}"
        final = self.path(relative)
        temporary = final.with_name(f".{file_id}.tmp")

        def create() -> BinaryIO:
            final.parent.mkdir(parents=True, exist_ok=True)
            return temporary.open("xb")

        return StagedFile(relative, final, temporary, await asyncio.to_thread(create), max_bytes)

    async def remove(self, relative: str) -> None:
        await asyncio.to_thread(self.path(relative).unlink, missing_ok=True)


class StagedFile:
    def __init__(self, relative: str, final: Path, temporary: Path, handle: BinaryIO, max_bytes: int) -> None:
        self.relative = relative
        self.size = 0
        self._final = final
        self._temporary = temporary
        self._handle = handle
        self._max_bytes = max_bytes

    async def write(self, data: bytes) -> None:
        """Append ``data``; past the limit, the file is dropped and the upload is a 413."""
        self.size += len(data)
        if self.size > self._max_bytes:
            await self.discard()
            raise PayloadTooLarge(
                f"The file exceeds this server's upload limit of {self._max_bytes} bytes (files.max_bytes). "
                "Split the requests into several smaller files and batches."
            )
        await asyncio.to_thread(self._handle.write, data)

    async def commit(self) -> None:
        def finish() -> None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.replace(self._temporary, self._final)

        await asyncio.to_thread(finish)

    async def discard(self) -> None:
        def drop() -> None:
            self._handle.close()
            self._temporary.unlink(missing_ok=True)

        if not self._handle.closed:
            await asyncio.to_thread(drop)


def _live(project_id: str) -> Select[File]:
    return select(File).where(File.project_id == project_id, File.deleted_at.is_(None))


async def get_file(session: AsyncSession, project_id: str, file_id: str) -> File | None:
    """The project's file, unless deleted."""
    return (await session.execute(_live(project_id).where(File.id == file_id))).scalar_one_or_none()


async def list_files(
    session: AsyncSession, project_id: str, *, purpose: str | None, limit: int, after: str | None, order: Order
) -> Page[File]:
    query = _live(project_id)
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    key = [File.created_at, File.id]
    return await page(
        session, query, key=key, scope=File.project_id == project_id, limit=limit, after=after, order=order
    )


async def mark_deleted(session: AsyncSession, project_id: str, file_id: str) -> bool:
    """Hide the file (its row stays, so batches that name it still resolve to "deleted"); False if not found."""
    result = await session.execute(
        update(File)
        .where(File.id == file_id, File.project_id == project_id, File.deleted_at.is_(None))
        .values(deleted_at=int(time.time()))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
