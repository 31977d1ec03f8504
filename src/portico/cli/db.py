"""``portico db``: the database schema."""

from __future__ import annotations

import asyncio

import typer

from portico.cli.common import ConfigOption, console, load_settings
from portico.storage.database import Database

app = typer.Typer(
    help="Manage the database (SQLite by default, PostgreSQL by PORTICO_DATABASE_URL).", no_args_is_help=True
)


@app.command()
def upgrade(config: ConfigOption = None) -> None:
    """Apply every pending migration (the server also does this on start)."""
    settings = load_settings(config)

    async def run() -> None:
        database = Database(settings.database, schema=settings.database_schema)
        try:
            await database.upgrade()
        finally:
            await database.close()

    asyncio.run(run())
    console.print("Database is up to date.")
