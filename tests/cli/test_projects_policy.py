"""`portico projects policy set|show|clear`, against the test's own SQLite database: what it stores is what a
key of the project then carries."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from portico.auth.authenticator import Authenticator
from portico.cli import app
from portico.safety.policy import BLOCKABLE, DEFAULT_THRESHOLD, ContentPolicy
from portico.services.control_plane import open_admin, server_secret
from portico.settings import Settings

runner = CliRunner()


def _policy_of_a_new_key(project: str) -> ContentPolicy | None:
    """The content policy on the principal of a new key of ``project``."""

    async def run() -> ContentPolicy | None:
        settings = Settings()
        database, admin = await open_admin(settings)
        try:
            organization = await admin.default_organization()
            created = await admin.create_key(organization.id, project=project, name="t", scopes=[], tier="free")
            authenticator = Authenticator(database, server_secret(settings), ttl_s=0.5)
            return (await authenticator.authenticate(created.plaintext)).content_policy
        finally:
            await database.close()

    return asyncio.run(run())


@pytest.fixture
def project() -> str:
    created = runner.invoke(app, ["projects", "create", "guarded"])
    assert created.exit_code == 0, created.output
    return created.stdout.strip()


def test_set_show_and_clear(project: str) -> None:
    set_ = runner.invoke(
        app,
        [
            "projects", "policy", "set", project,
            "--block", "hate=0.4", "--block", "violence",
            "--check", "both", "--on-output", "fail", "--injection", "block", "--injection-threshold", "0.7",
        ],
    )  # fmt: skip
    assert set_.exit_code == 0, set_.output
    expected = ContentPolicy.model_validate(
        {
            "categories": {"hate": 0.4, "violence": DEFAULT_THRESHOLD},
            "check": "both",
            "on_output": "fail",
            "injection": "block",
            "injection_threshold": 0.7,
        }
    )
    assert ContentPolicy.model_validate(json.loads(set_.stdout)) == expected
    shown = runner.invoke(app, ["projects", "policy", "show", "guarded"])  # by name too
    assert shown.exit_code == 0 and ContentPolicy.model_validate(json.loads(shown.stdout)) == expected
    assert _policy_of_a_new_key(project) == expected

    cleared = runner.invoke(app, ["projects", "policy", "clear", project])
    assert cleared.exit_code == 0 and "Cleared the content policy" in cleared.output
    assert json.loads(runner.invoke(app, ["projects", "policy", "show", project]).stdout) is None
    assert _policy_of_a_new_key(project) is None


def test_set_without_block_blocks_every_category_at_its_default(project: str) -> None:
    set_ = runner.invoke(app, ["projects", "policy", "set", project, "--model", "guard-up"])
    assert set_.exit_code == 0, set_.output
    policy = ContentPolicy.model_validate(json.loads(set_.stdout))
    assert policy.categories == dict.fromkeys(BLOCKABLE, DEFAULT_THRESHOLD)
    assert (policy.model, policy.check, policy.injection) == ("guard-up", "input", "warn")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--block", "gore=0.4"], "unknown category 'gore'; categories are: harassment, hate"),
        (["--block", "hate=1.5"], "the threshold of hate must be between 0 and 1, not 1.5"),
        (["--block", "hate=high"], "the threshold of hate must be a number between 0 and 1"),
        (["--block", "prompt_injection=0.4"], "use --injection and --injection-threshold"),
        (["--injection-threshold", "2"], "--injection-threshold"),
        (["--check", "sideways"], "--check"),
    ],
)
def test_bad_options_are_a_clear_usage_error_and_store_nothing(project: str, args: list[str], says: str) -> None:
    refused = runner.invoke(app, ["projects", "policy", "set", project, *args], env={"COLUMNS": "200"})
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert says in " ".join(refused.output.replace("│", " ").split())
    assert json.loads(runner.invoke(app, ["projects", "policy", "show", project]).stdout) is None


def test_an_unknown_project_is_one_red_line() -> None:
    for command in (["set", "nope"], ["show", "nope"], ["clear", "nope"]):
        refused = runner.invoke(app, ["projects", "policy", *command])
        assert refused.exit_code == 1 and "No project 'nope'" in refused.output, refused.output
