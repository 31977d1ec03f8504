"""`portico db upgrade`, `portico projects` and `portico keys`, against the test's own SQLite database."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner

from portico.auth.authenticator import Authenticator
from portico.auth.keys import parse_key
from portico.cli import app
from portico.errors import RevokedApiKey
from portico.services.control_plane import open_admin, server_secret
from portico.settings import Settings

runner = CliRunner()


def _authenticate(key: str) -> object:
    async def run() -> object:
        settings = Settings()
        database, _ = await open_admin(settings)
        try:
            return await Authenticator(database, server_secret(settings), ttl_s=0.5).authenticate(key)
        finally:
            await database.close()

    return asyncio.run(run())


def test_keys_create_prints_a_working_key_once_and_list_never_shows_it() -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    created = runner.invoke(app, ["keys", "create", "--project", "default", "--scopes", "inference,usage:read"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    parts = parse_key(key)
    assert parts is not None
    principal = _authenticate(key)
    assert sorted(principal.scopes) == ["inference", "usage:read"]  # type: ignore[attr-defined]
    assert principal.tier == "free"  # type: ignore[attr-defined]

    listed = runner.invoke(app, ["keys", "list"], env={"COLUMNS": "200"})
    assert parts.key_id in listed.stdout and parts.secret not in listed.stdout

    assert runner.invoke(app, ["keys", "revoke", parts.key_id]).exit_code == 0
    try:
        _authenticate(key)
    except RevokedApiKey:
        pass
    else:
        raise AssertionError("a revoked key still authenticated")


def test_bad_input_is_one_clear_line_not_a_traceback() -> None:
    unknown_scope = runner.invoke(app, ["keys", "create", "--scopes", "inference,everything"])
    assert unknown_scope.exit_code == 1
    assert "Unknown scope(s): everything" in unknown_scope.output and "Traceback" not in unknown_scope.output
    unknown_project = runner.invoke(app, ["keys", "create", "--project", "nope"])
    assert unknown_project.exit_code == 1 and "No active project 'nope'" in unknown_project.output


def test_projects_create_then_keys_for_it() -> None:
    project = runner.invoke(app, ["projects", "create", "research"])
    assert project.exit_code == 0
    project_id = project.stdout.strip()
    assert project_id.startswith("proj_")
    created = runner.invoke(app, ["keys", "create", "--project", "research", "--tier", "standard"])
    assert created.exit_code == 0 and project_id in created.output
