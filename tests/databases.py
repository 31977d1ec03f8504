"""Databases for tests: SQLite in a file of the test's tmp_path, PostgreSQL in a fresh schema of database ``test``.

A plain module rather than a conftest, so that tests/conftest.py (and test modules) import the fixtures from it:
``database_url`` (parametrized: "sqlite", "postgresql"), ``database_schema`` (None for SQLite, else a fresh schema
dropped afterwards) and ``database`` (an upgraded ``Database`` on both). Multi-process tests use
``postgres_schema()`` and ``sqlite_url()`` to give several processes one database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest

from portico.storage.database import Database

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'portico.db'}"


@contextmanager
def postgres_schema(prefix: str = "test") -> Iterator[str]:
    """A unique schema name in database ``test``; the schema and all in it are dropped on exit.

    ``Database.upgrade()`` creates the schema, so processes given this name (and ``POSTGRES_URL``) share it.
    Usable from sync and async code alike: the drop runs on its own event loop in a thread.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    try:
        yield name
    finally:
        with ThreadPoolExecutor(max_workers=1) as thread:
            thread.submit(lambda: asyncio.run(_drop_schema(name))).result()


async def _drop_schema(name: str) -> None:
    connection = await asyncpg.connect(_POSTGRES_DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return sqlite_url(tmp_path) if request.param == "sqlite" else POSTGRES_URL


@pytest.fixture
def database_schema(database_url: str) -> Iterator[str | None]:
    if database_url.startswith("postgresql"):
        with postgres_schema() as schema:
            yield schema
    else:
        yield None


@pytest.fixture
async def database(database_url: str, database_schema: str | None) -> AsyncIterator[Database]:
    database = Database(database_url, schema=database_schema)
    try:
        await database.upgrade()
        yield database
    finally:
        await database.close()
