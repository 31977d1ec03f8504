"""The database: an async SQLAlchemy engine and its sessions, migrations run in code, and the one place where the
driver's "cannot reach the database" failures become ``StorageUnavailable``.

SQLite (``sqlite+aiosqlite:///path/portico.db``) is the embedded default; several processes may share its file.
PostgreSQL (``postgresql+asyncpg://...``) is the scale-out choice; ``schema`` keeps everything in one schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from portico.errors import StorageUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")

SQLITE_BUSY_TIMEOUT_MS = 5000
# asyncpg waits 60 s by default: a health check must not hang that long on an unreachable host.
POSTGRES_CONNECT_TIMEOUT_S = 10
# SQLite's primary result code for a bad statement ("no such table", a syntax error): not an outage.
_SQLITE_ERROR = 1
# PostgreSQL's SQLSTATE classes that mean the server cannot use the database: a connection exception (08),
# insufficient resources (53: too many connections, disk full), a shutdown or start-up in progress (57P), and
# a refused login (28: role or password, 3D: no such database).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "28", "3D")
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_LOCK_POLL_S = 0.05

Dialect = Literal["sqlite", "postgresql"]

UNAVAILABLE_MESSAGE = (
    "The database is unreachable right now, so the request could not be completed. "
    "The request may be retried in a moment."
)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn failures to reach or use the database into ``StorageUnavailable`` (503, retryable), keeping the cause.

    Errors about the statement or its data (an integrity violation, a syntax error) pass through unchanged:
    retrying would not help them.
    """
    try:
        yield
    except (DBAPIError, PoolTimeout, OSError) as exc:
        if not _means_unavailable(exc):
            raise
        raise StorageUnavailable(UNAVAILABLE_MESSAGE) from exc


def _means_unavailable(exc: Exception) -> bool:
    if not isinstance(exc, DBAPIError):
        return True  # the driver's OSError (refused, reset, timed out) or no free connection in the pool
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if isinstance(exc, OperationalError):
        return getattr(exc.orig, "sqlite_errorcode", None) != _SQLITE_ERROR
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES)


class Database:
    """An async engine with its session factory; ``upgrade()`` migrates, ``close()`` releases the connections."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = make_url(url)
        self.schema = schema
        self._sqlite_file: Path | None = None
        backend = self.url.get_backend_name()
        if backend == "sqlite":
            if schema is not None:
                raise ValueError("A database schema applies to PostgreSQL only; leave it unset for SQLite.")
            self.engine = self._create_sqlite_engine()
        elif backend == "postgresql":
            self.engine = self._create_postgresql_engine()
        else:
            raise ValueError(
                f"Unsupported database URL '{self.url.render_as_string()}': use sqlite+aiosqlite:// "
                "or postgresql+asyncpg://."
            )
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> Dialect:
        return cast(Dialect, self.engine.dialect.name)

    def _create_sqlite_engine(self) -> AsyncEngine:
        path = self.url.database
        if path and path != ":memory:" and not self.url.query.get("uri"):
            self._sqlite_file = Path(path)
            self._sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(self.url)
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
        return engine

    def _create_postgresql_engine(self) -> AsyncEngine:
        server_settings = {"application_name": "portico"}
        if self.schema is not None:
            if not _SCHEMA_NAME.fullmatch(self.schema):
                raise ValueError(f"Invalid schema name '{self.schema}': use letters, digits and underscores.")
            server_settings["search_path"] = _quoted(self.schema)
        return create_async_engine(
            self.url,
            # A restarted server leaves dead connections in the pool; check each one before handing it out.
            pool_pre_ping=True,
            connect_args={"server_settings": server_settings, "timeout": POSTGRES_CONNECT_TIMEOUT_S},
        )

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session; the caller commits. The database's failures inside the block become ``StorageUnavailable``."""
        with translate_errors():
            async with self._sessions() as session:
                yield session

    async def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the database answers."""
        with translate_errors():
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

    async def upgrade(self) -> None:
        """Migrate to the newest revision; a no-op when up to date. Safe when several processes call it at once."""
        with translate_errors():
            async with self._sqlite_migration_lock(), self.engine.begin() as connection:
                if self.dialect == "postgresql":
                    await self._lock_postgresql_migrations(connection)
                await connection.run_sync(_upgrade_to_head)

    async def close(self) -> None:
        await self.engine.dispose()

    async def _lock_postgresql_migrations(self, connection: AsyncConnection) -> None:
        # Held until the migration's transaction ends; the others then find the schema at head and do nothing.
        # The schema is created under the lock too (concurrent CREATE SCHEMA IF NOT EXISTS can collide).
        lock_name = f"portico.migrations.{self.schema or ''}"
        await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": lock_name})
        if self.schema is None:
            return
        exists = text("SELECT 1 FROM pg_namespace WHERE nspname = :name")
        # Looked up first: a role without CREATE on the database may still use a schema made for it.
        if (await connection.execute(exists, {"name": self.schema})).first() is None:
            await connection.execute(text(f"CREATE SCHEMA {_quoted(self.schema)}"))

    @contextlib.asynccontextmanager
    async def _sqlite_migration_lock(self) -> AsyncIterator[None]:
        """An exclusive lock on ``<db file>.lock`` while migrating (SQLite runs DDL outside transactions)."""
        if self._sqlite_file is None:
            yield
            return
        lock_path = self._sqlite_file.with_name(self._sqlite_file.name + ".lock")
        with lock_path.open("a") as lock_file:
            # Polled rather than blocking in a thread, so a cancelled upgrade leaves no thread holding the lock.
            while True:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(_LOCK_POLL_S)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def _configure_sqlite_connection(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # The busy timeout first: switching to WAL needs a lock another process may hold for a moment.
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    # WAL lets readers and one writer of other processes proceed together.
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _upgrade_to_head(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: no alembic.ini is needed at run time."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
