"""`portico chat`, `usage`, `bench`, `models list` and `config reference`, as a user runs them."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from portico.cli import app
from portico.settings_reference import BEGIN
from tests.conftest import ECHO_ALIAS, ECHO_SNAPSHOT, echo_settings, live_server

runner = CliRunner()
ECHO_TOML = f"""
[[models]]
alias = "{ECHO_ALIAS}"
snapshot = "{ECHO_SNAPSHOT}"
engine = "echo"
context_window = 512
pricing = {{ input_per_million = 1.0, output_per_million = 2.0 }}
"""


def _config(tmp_path: Path) -> str:
    path = tmp_path / "portico.toml"
    path.write_text(ECHO_TOML)
    return str(path)


def test_chat_in_process_streams_an_answer_with_its_usage(tmp_path: Path) -> None:
    ran = runner.invoke(
        app, ["chat", "--in-process", "--config", _config(tmp_path), "--model", ECHO_ALIAS, "--message", "hello there"]
    )
    assert ran.exit_code == 0, ran.output
    assert "hello there" in ran.stdout
    assert "prompt + 2 completion tokens" in ran.stdout and "TTFT" in ran.stdout


def test_chat_keeps_the_conversation_until_new(tmp_path: Path) -> None:
    typed = "first words\nsecond\n/new\nthird\n/exit\n"
    command = ["chat", "--in-process", "--config", _config(tmp_path), "--model", ECHO_ALIAS]
    ran = runner.invoke(app, command, input=typed)
    assert ran.exit_code == 0, ran.output
    prompts = [int(line.split(" prompt")[0]) for line in ran.stdout.splitlines() if " prompt + " in line]
    assert len(prompts) == 3
    assert prompts[1] > prompts[0]  # the second turn sent the first one too
    assert prompts[2] < prompts[1]  # /new started over
    assert "(new conversation)" in ran.stdout


def test_chat_shows_an_error_and_goes_on(tmp_path: Path) -> None:
    ran = runner.invoke(
        app, ["chat", "--in-process", "--config", _config(tmp_path), "--model", "nope", "--message", "hi"]
    )
    assert ran.exit_code == 0 and "model_not_found" in ran.stdout


def test_usage_and_bench_against_a_server() -> None:
    with live_server(echo_settings(context_window=512)) as server:
        url = f"{server.url}/v1"
        bench = runner.invoke(
            app,
            ["bench", "--url", url, "--model", ECHO_ALIAS, "--requests", "6", "--concurrency", "3", "--max-tokens=8"],
        )
        assert bench.exit_code == 0, bench.output
        assert "6 / 0" in bench.stdout and "requests/s" in bench.stdout and "time to first token" in bench.stdout
        for _ in range(100):  # usage records are written in batches, about once a second
            if httpx.get(f"{url}/usage").json()["totals"]["requests"] >= 6:
                break
            time.sleep(0.05)
        usage = runner.invoke(app, ["usage", "--url", url, "--days", "2"], env={"COLUMNS": "200"})
    assert usage.exit_code == 0, usage.output
    [row] = [line for line in usage.stdout.splitlines() if ECHO_SNAPSHOT in line]
    cells = [cell.strip() for cell in row.split("│") if cell.strip()]
    assert cells[1:3] == [ECHO_SNAPSHOT, "6"]


def test_bench_fails_when_every_request_fails() -> None:
    with live_server(echo_settings()) as server:
        ran = runner.invoke(app, ["bench", "--url", f"{server.url}/v1", "--model", "nope", "--requests", "2"])
    assert ran.exit_code == 1 and "model_not_found" in ran.stdout


def test_models_list_and_config_reference(tmp_path: Path) -> None:
    listed = runner.invoke(app, ["models", "list", "--config", _config(tmp_path)])
    assert listed.exit_code == 0 and ECHO_ALIAS in listed.stdout
    reference = runner.invoke(app, ["config", "reference"])
    assert reference.exit_code == 0 and reference.stdout.startswith(BEGIN)


def test_models_list_shows_an_upstream_models_deployments(tmp_path: Path) -> None:
    config = tmp_path / "portico.toml"
    config.write_text(
        f'{ECHO_TOML}\n[[models]]\nalias = "gpt"\nsnapshot = "gpt-1"\nengine = "upstream"\n'
        '[[models.upstream]]\nname = "east"\nbase_url = "http://127.0.0.1:9001/v1"\n'
        '[[models.upstream]]\nbase_url = "http://127.0.0.1:9002/v1"\n'
    )

    listed = runner.invoke(app, ["models", "list", "--config", str(config)])

    assert listed.exit_code == 0
    assert {"east,", "gpt/2", "local"} <= set(listed.stdout.split())


@pytest.mark.parametrize(
    ("entry", "shown"),
    [
        ('engine = "upstream"\n', "models.0.upstream.upstream\n  Field required [type=missing"),
        ('engine = "llama_cpp"\necho = { tokens_per_second = 5 }\n', "models.0.llama_cpp.echo\n  Extra inputs"),
    ],
)
def test_a_model_entry_for_the_wrong_engine_is_explained(tmp_path: Path, entry: str, shown: str) -> None:
    config = tmp_path / "portico.toml"
    config.write_text(f'[[models]]\nalias = "m"\nsnapshot = "m-1"\n{entry}')

    listed = runner.invoke(app, ["models", "list", "--config", str(config)])

    assert listed.exit_code == 2
    assert "Invalid settings:" in listed.stderr and shown in listed.stderr
