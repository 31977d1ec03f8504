"""Settings: PORTICO_ environment variables (nested with __), portico.toml, and validation."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from portico.settings import ModelSettings, Settings, SnapshotSettings


def test_defaults_serve_the_embedded_models_on_loopback() -> None:
    settings = Settings()

    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    chat, embeddings = settings.models
    assert (chat.alias, chat.engine) == ("smollm2", "llama_cpp")
    assert (embeddings.alias, embeddings.engine) == ("all-minilm-l6-v2", "sentence_transformers")
    assert settings.request_timeout_s == 60


def test_environment_with_nested_delimiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_PORT", "9001")
    monkeypatch.setenv("PORTICO_QUEUE__MAX_WAITING", "7")

    settings = Settings()

    assert settings.port == 9001
    assert settings.queue.max_waiting == 7


def test_toml_file_declares_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "portico.toml"
    config.write_text(
        'port = 8100\n[[models]]\nalias = "tiny"\nsnapshot = "tiny-1"\nengine = "echo"\n'
        "[models.echo]\ntokens_per_second = 50\n"
    )

    settings = Settings.load(config)

    assert settings.port == 8100
    assert settings.models[0].alias == "tiny"
    assert settings.models[0].echo.tokens_per_second == 50


def test_environment_overrides_the_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "portico.toml"
    config.write_text("port = 8100\n")
    monkeypatch.setenv("PORTICO_PORT", "8200")

    assert Settings.load(config).port == 8200


def test_model_names_must_be_unique() -> None:
    one = ModelSettings(alias="a", snapshot="a-1", engine="echo")
    clash = ModelSettings(alias="a-1", snapshot="a-2", engine="echo")

    with pytest.raises(ValidationError, match="'a-1' is used by more than one model"):
        Settings(models=[one, clash])


def test_unknown_settings_are_rejected(tmp_path: Path) -> None:
    config = tmp_path / "portico.toml"
    config.write_text("prot = 1\n")

    with pytest.raises(ValidationError, match="prot"):
        Settings.load(config)


def test_export_to_environment_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(port=8123, models=[ModelSettings(alias="x", snapshot="x-1", engine="echo")])
    original.export_to_environment()
    try:
        assert Settings() == original
    finally:
        for name in original.model_dump():
            monkeypatch.delenv(f"PORTICO_{name.upper()}", raising=False)


# -- model versioning (docs/versioning.md) -------------------------------------------------------------------
def test_toml_file_declares_older_snapshots_with_dates(tmp_path: Path) -> None:
    config = tmp_path / "portico.toml"
    config.write_text(
        '[[models]]\nalias = "tiny"\nsnapshot = "tiny-2"\nengine = "echo"\n'
        '[[models.previous_snapshots]]\nid = "tiny-1"\ndeprecated = 2026-01-15\nsunset = 2026-07-01\n'
        'replacement = "tiny"\n'
        '[[models.previous_snapshots]]\nid = "tiny-0"\nretired = true\nreplacement = "tiny-2"\n'
    )

    (model,) = Settings.load(config).models

    assert model.names() == ["tiny", "tiny-2", "tiny-1", "tiny-0"]
    older, oldest = model.previous_snapshots
    assert (older.deprecated, older.sunset, older.replacement) == (date(2026, 1, 15), date(2026, 7, 1), "tiny")
    assert oldest.retired and oldest.replacement == "tiny-2"


def test_snapshot_ids_must_be_unique_across_models() -> None:
    one = ModelSettings(alias="a", snapshot="a-2", engine="echo", previous_snapshots=[SnapshotSettings(id="old")])
    other = ModelSettings(alias="b", snapshot="b-2", engine="echo", previous_snapshots=[SnapshotSettings(id="old")])

    with pytest.raises(ValidationError, match="'old' is used by more than one model"):
        Settings(models=[one, other])


@pytest.mark.parametrize(
    ("replacement", "why"),
    [("gpt-9", "unknown"), ("a-0", "retired"), ("a-1", "itself")],
)
def test_replacement_must_be_another_served_model(replacement: str, why: str) -> None:
    older = [SnapshotSettings(id="a-1", deprecated=date(2026, 1, 1), replacement=replacement)]
    retired = [SnapshotSettings(id="a-0", retired=True)]
    model = ModelSettings(alias="a", snapshot="a-2", engine="echo", previous_snapshots=older + retired)

    with pytest.raises(ValidationError, match=f"snapshot 'a-1' names replacement '{replacement}'"):
        Settings(models=[model])


def test_current_snapshot_cannot_be_replaced_by_its_own_alias() -> None:
    model = ModelSettings(alias="a", snapshot="a-2", engine="echo", deprecated=date(2026, 1, 1), replacement="a")

    with pytest.raises(ValidationError, match="snapshot 'a-2' names replacement 'a'"):
        Settings(models=[model])


def test_export_to_environment_round_trips_snapshot_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    older = SnapshotSettings(id="x-0", deprecated=date(2026, 1, 15), sunset=date(2026, 7, 1), replacement="x")
    original = Settings(models=[ModelSettings(alias="x", snapshot="x-1", engine="echo", previous_snapshots=[older])])
    original.export_to_environment()
    try:
        assert Settings() == original
    finally:
        for name in original.model_dump():
            monkeypatch.delenv(f"PORTICO_{name.upper()}", raising=False)
