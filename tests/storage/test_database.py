from __future__ import annotations

import asyncio
import socket
import sys
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from portico.errors import StorageUnavailable
from portico.storage import resources  # noqa: F401 (its tables are part of the schema compared)
from portico.storage.database import Database, alembic_config
from portico.storage.models import Base, Organization, Project
from tests.databases import POSTGRES_URL

TABLES = {"organizations", "projects", "tiers", "api_keys", "usage_records"} | {
    "idempotency_records",
    "jobs",
    "job_events",
    "webhook_deliveries",
    "project_secrets",
    "files",
    "batches",
    "conversations",
    "conversation_messages",
    "stored_completions",
    "responses",
}

# Each process waits until all have started, so that their upgrades really overlap.
UPGRADE_SCRIPT = """
import asyncio, os, sys, time
from pathlib import Path
from portico.storage.database import Database

url, schema, barrier, count = sys.argv[1], sys.argv[2] or None, Path(sys.argv[3]), int(sys.argv[4])
(barrier / str(os.getpid())).touch()
while len(list(barrier.iterdir())) < count:
    time.sleep(0.005)

async def main():
    database = Database(url, schema=schema)
    try:
        await database.upgrade()
    finally:
        await database.close()

asyncio.run(main())
"""


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def table_names(database: Database) -> set[str]:
    async with database.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def alembic_versions(database: Database) -> list[str]:
    async with database.session() as session:
        return list((await session.execute(text("SELECT version_num FROM alembic_version"))).scalars())


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens on it once the probe is closed


async def test_upgrade_creates_the_tables(database: Database) -> None:
    assert await table_names(database) == {*TABLES, "alembic_version"}
    assert await alembic_versions(database) == [head_revision()]


async def test_upgrade_again_is_a_no_op_and_keeps_data(database: Database) -> None:
    async with database.session() as session:
        session.add(Organization(id="org_1", name="Acme", created_at=1))
        await session.commit()

    await database.upgrade()

    assert await alembic_versions(database) == [head_revision()]
    async with database.session() as session:
        assert (await session.get(Organization, "org_1")) is not None


async def test_migrations_match_the_models(database: Database) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with database.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_concurrent_upgrades_from_three_processes(
    database_url: str, database_schema: str | None, tmp_path: Path
) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-W", "error", "-c", UPGRADE_SCRIPT,
            database_url, database_schema or "", str(barrier), "3",
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]  # fmt: skip
    results = await asyncio.wait_for(asyncio.gather(*(process.communicate() for process in processes)), 60)

    for process, (_, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr.decode()
    database = Database(database_url, schema=database_schema)
    try:
        assert await alembic_versions(database) == [head_revision()]
        assert await table_names(database) >= TABLES
    finally:
        await database.close()


@pytest.mark.parametrize("database_url", [POSTGRES_URL], ids=["postgresql"])
async def test_postgresql_schema_holds_everything(database: Database) -> None:
    assert database.dialect == "postgresql"
    async with database.session() as session:
        query = text("SELECT table_name FROM information_schema.tables WHERE table_schema = :schema")
        names = set((await session.execute(query, {"schema": database.schema})).scalars())
    assert names == {*TABLES, "alembic_version"}


async def test_sqlite_is_shareable_between_processes(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'dir' / 'portico.db'}")
    try:
        await database.upgrade()
        async with database.session() as session:
            pragmas = {
                name: (await session.execute(text(f"PRAGMA {name}"))).scalar_one()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            }
    finally:
        await database.close()
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1}
    assert (tmp_path / "nested" / "dir" / "portico.db").is_file()
    assert database.dialect == "sqlite"


async def test_foreign_keys_are_enforced(database: Database) -> None:
    async with database.session() as session:
        session.add(Project(id="proj_1", organization_id="org_missing", name="p", created_at=1))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_statement_errors_are_not_reported_as_unavailability(database: Database) -> None:
    async with database.session() as session:
        session.add(Organization(id="org_1", name="Acme", created_at=1))
        await session.commit()
    async with database.session() as session:
        session.add(Organization(id="org_1", name="Again", created_at=2))
        with pytest.raises(IntegrityError):
            await session.commit()
    async with database.session() as session:
        with pytest.raises(DBAPIError) as raised:
            await session.execute(text("SELECT * FROM no_such_table"))
    assert "no_such_table" in str(raised.value)


async def test_ping_answers_when_the_database_is_up(database: Database) -> None:
    await database.ping()


async def test_ping_raises_storage_unavailable_when_postgresql_is_unreachable() -> None:
    database = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/test")
    try:
        with pytest.raises(StorageUnavailable) as raised:
            await database.ping()
        with pytest.raises(StorageUnavailable):
            await database.upgrade()
    finally:
        await database.close()
    assert raised.value.retryable
    assert raised.value.status_code == 503
    assert "unreachable" in raised.value.message
    assert "retried" in raised.value.message
    assert isinstance(raised.value.__cause__, OSError | DBAPIError)


@pytest.mark.parametrize("database_url", [POSTGRES_URL], ids=["postgresql"])
async def test_a_dropped_connection_is_storage_unavailable_and_the_next_session_reconnects(
    database: Database,
) -> None:
    with pytest.raises(StorageUnavailable) as raised:
        async with database.session() as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with database.engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await session.execute(text("SELECT 1"))
    assert isinstance(raised.value.__cause__, DBAPIError)

    async with database.session() as session:
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1


async def test_ping_raises_storage_unavailable_when_postgresql_refuses_the_login() -> None:
    database = Database("postgresql+asyncpg://postgres@127.0.0.1:5432/portico_no_such_database")
    try:
        with pytest.raises(StorageUnavailable):
            await database.ping()
    finally:
        await database.close()


async def test_ping_raises_storage_unavailable_when_sqlite_cannot_open(tmp_path: Path) -> None:
    threads_before = set(threading.enumerate())
    database = Database(f"sqlite+aiosqlite:///{tmp_path}")  # a directory is not a database file
    try:
        with pytest.raises(StorageUnavailable) as raised:
            await database.ping()
    finally:
        await database.close()
    assert isinstance(raised.value.__cause__, DBAPIError)
    # aiosqlite stops the thread of a failed connection without waiting for it: wait here, or the thread may
    # report to this test's event loop once it is closed.
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(timeout=5)


def test_unsupported_urls_and_schema_names_are_refused() -> None:
    with pytest.raises(ValueError, match="Unsupported database URL"):
        Database("mysql+aiomysql://root@127.0.0.1/test")
    with pytest.raises(ValueError, match="PostgreSQL only"):
        Database("sqlite+aiosqlite:///portico.db", schema="s")
    with pytest.raises(ValueError, match="Invalid schema name"):
        Database("postgresql+asyncpg://postgres@127.0.0.1/test", schema="a; DROP TABLE x")
