"""Alembic's entry point. ``Database.upgrade()`` passes its open connection in ``config.attributes``.

Without one (Alembic's command line, to author a revision), the URL comes from ``-x url=...`` or the
``sqlalchemy.url`` option.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from portico.storage import resources  # noqa: F401 (registers the resource tables on Base.metadata)
from portico.storage.models import Base


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite alters a table by copying it: Alembic's batch mode does that.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_from_url(url: str) -> None:
    from portico.storage.database import Database

    database = Database(url)
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await database.close()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "No database to migrate: pass -x url=sqlite+aiosqlite:///path/portico.db (or set sqlalchemy.url)."
        )
    asyncio.run(run_migrations_from_url(url))
