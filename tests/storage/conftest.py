"""The database fixtures, until tests/conftest.py imports them for every package (then this file can go)."""

from tests.databases import database, database_schema, database_url  # noqa: F401
