"""Every code sample in README.md and docs/ is checked, so the docs cannot rot: TOML samples are valid Portico
settings, JSON samples parse, Python samples compile, shell samples parse (`bash -n`); the settings reference in
docs/configuration.md is exactly what the Settings model generates. Samples that talk to a server run for real in
tests/docs/test_quickstart.py."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from portico.errors import AuthenticationFailed, PorticoError, RateLimited
from portico.settings import Settings
from portico.settings_reference import BEGIN, END, reference, undocumented

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def samples(language: str) -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for match in FENCE.finditer(path.read_text()):
            if match.group(1) == language:
                line = path.read_text().count("\n", 0, match.start()) + 1
                found.append((f"{path.relative_to(ROOT)}:{line}", match.group(2)))
    return found


def test_there_are_samples_of_each_kind() -> None:
    assert {len(samples(kind)) > 3 for kind in ("toml", "json", "python", "bash")} == {True}


@pytest.mark.parametrize(("where", "text"), samples("toml"), ids=lambda value: str(value)[:40])
def test_toml_samples_are_valid_settings(where: str, text: str) -> None:
    Settings(**tomllib.loads(text))


@pytest.mark.parametrize(("where", "text"), samples("json"), ids=lambda value: str(value)[:40])
def test_json_samples_parse(where: str, text: str) -> None:
    json.loads(text)


@pytest.mark.parametrize(("where", "text"), samples("python"), ids=lambda value: str(value)[:40])
def test_python_samples_compile(where: str, text: str) -> None:
    compile(text, where, "exec")


@pytest.mark.parametrize(("where", "text"), samples("bash") + samples("sh"), ids=lambda value: str(value)[:40])
def test_shell_samples_parse(where: str, text: str) -> None:
    checked = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True, check=False)
    assert checked.returncode == 0, f"{where}: {checked.stderr}"


def test_every_setting_is_described() -> None:
    assert undocumented() == []


def test_the_settings_reference_is_generated_from_the_settings_model() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    current = text[text.index(BEGIN) : text.index(END) + len(END)]
    stale = "docs/configuration.md is stale: run `portico config reference --write docs/configuration.md`"
    assert current == reference(), stale


def _error_classes(base: type[PorticoError]) -> list[type[PorticoError]]:
    return [cls for sub in base.__subclasses__() for cls in (sub, *_error_classes(sub))]


def test_every_error_code_is_in_the_errors_reference() -> None:
    reference = (ROOT / "docs" / "errors.md").read_text()
    rows = {(int(status), code) for status, code in re.findall(r"^\| (\d{3}) \| `\w+` \| `(\w+)` \|", reference, re.M)}
    abstract = {AuthenticationFailed, RateLimited}  # raised only as one of their subclasses
    missing = {
        (cls.status_code, cls.code)
        for cls in _error_classes(PorticoError)
        if cls not in abstract
        and cls.status_code != 499  # 499: the client left; only ever logged
        and (cls.status_code, cls.code) not in rows
    }
    assert not missing, f"docs/errors.md lacks rows for {sorted(missing)}"
