"""The control plane's records, in SQLite (the default, one file) or PostgreSQL (shared by many servers).

``models`` holds the tables, ``database`` the engine, sessions, migrations and the translation of the driver's
errors, and one module per kind of record (``usage``) holds its queries. Nothing here imports from above it.
"""
