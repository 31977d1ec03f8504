"""`portico db upgrade`, `portico projects` and `portico keys`, against the test's own SQLite database."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from portico.auth.authenticator import Authenticator
from portico.auth.keys import parse_key
from portico.cli import app, prepare_database
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


def test_serve_on_a_fresh_database_says_how_to_make_the_first_key(capsys: pytest.CaptureFixture[str]) -> None:
    prepare_database(Settings(host="0.0.0.0"))
    hint = capsys.readouterr().err
    assert "No API keys exist yet" in hint and "portico keys create" in hint and "PORTICO_ADMIN_KEY" in hint

    prepare_database(Settings(host="127.0.0.1"))  # auth off: no key needed, no hint
    assert "No API keys" not in capsys.readouterr().err


def test_serve_warns_that_memory_limits_multiply_with_workers(capsys: pytest.CaptureFixture[str]) -> None:
    prepare_database(Settings(workers=3))
    assert "up to that many times its limits" in capsys.readouterr().err.replace("\n", " ")
