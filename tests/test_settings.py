"""Settings: PORTICO_ environment variables (nested with __), portico.toml, and validation."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from portico.settings import (
    EchoModel,
    LlamaCppModel,
    ModelSettings,
    SentenceTransformersModel,
    Settings,
    SnapshotSettings,
    UpstreamModel,
)


def test_defaults_serve_the_embedded_models_on_loopback() -> None:
    settings = Settings()

    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    chat, embeddings, moderation = settings.models
    assert (chat.alias, chat.engine) == ("smollm2", "llama_cpp")
    assert (embeddings.alias, embeddings.engine) == ("all-minilm-l6-v2", "sentence_transformers")
    assert (moderation.alias, moderation.engine) == ("portico-moderation", "classifier")
    assert isinstance(chat, LlamaCppModel) and isinstance(embeddings, SentenceTransformersModel)
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
    one = EchoModel(alias="a", snapshot="a-1")
    clash = EchoModel(alias="a-1", snapshot="a-2")

    with pytest.raises(ValidationError, match="'a-1' is used by more than one model"):
        Settings(models=[one, clash])


def test_unknown_settings_are_rejected(tmp_path: Path) -> None:
    config = tmp_path / "portico.toml"
    config.write_text("prot = 1\n")

    with pytest.raises(ValidationError, match="prot"):
        Settings.load(config)


def test_export_to_environment_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(port=8123, models=[EchoModel(alias="x", snapshot="x-1")])
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
    one = EchoModel(alias="a", snapshot="a-2", previous_snapshots=[SnapshotSettings(id="old")])
    other = EchoModel(alias="b", snapshot="b-2", previous_snapshots=[SnapshotSettings(id="old")])

    with pytest.raises(ValidationError, match="'old' is used by more than one model"):
        Settings(models=[one, other])


@pytest.mark.parametrize(
    ("replacement", "why"),
    [("gpt-9", "unknown"), ("a-0", "retired"), ("a-1", "itself")],
)
def test_replacement_must_be_another_served_model(replacement: str, why: str) -> None:
    older = [SnapshotSettings(id="a-1", deprecated=date(2026, 1, 1), replacement=replacement)]
    retired = [SnapshotSettings(id="a-0", retired=True)]
    model = EchoModel(alias="a", snapshot="a-2", previous_snapshots=older + retired)

    with pytest.raises(ValidationError, match=f"snapshot 'a-1' names replacement '{replacement}'"):
        Settings(models=[model])


def test_current_snapshot_cannot_be_replaced_by_its_own_alias() -> None:
    model = EchoModel(alias="a", snapshot="a-2", deprecated=date(2026, 1, 1), replacement="a")

    with pytest.raises(ValidationError, match="snapshot 'a-2' names replacement 'a'"):
        Settings(models=[model])


def test_export_to_environment_round_trips_snapshot_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    older = SnapshotSettings(id="x-0", deprecated=date(2026, 1, 15), sunset=date(2026, 7, 1), replacement="x")
    original = Settings(models=[EchoModel(alias="x", snapshot="x-1", previous_snapshots=[older])])
    original.export_to_environment()
    try:
        assert Settings() == original
    finally:
        for name in original.model_dump():
            monkeypatch.delenv(f"PORTICO_{name.upper()}", raising=False)


# -- the model table: one class per engine (portico.settings.models) ------------------------------------------
def _load_error(tmp_path: Path, toml: str) -> ValidationError:
    config = tmp_path / "portico.toml"
    config.write_text(toml)
    with pytest.raises(ValidationError) as raised:
        Settings.load(config)
    return raised.value


def test_each_entry_becomes_its_engines_class_and_no_engine_means_llama_cpp(tmp_path: Path) -> None:
    config = tmp_path / "portico.toml"
    config.write_text(
        '[[models]]\nalias = "chat"\nsnapshot = "chat-1"\nthreads = 2\n'
        '[[models]]\nalias = "vec"\nsnapshot = "vec-1"\nengine = "sentence_transformers"\n'
        '[[models]]\nalias = "echo"\nsnapshot = "echo-1"\nengine = "echo"\n'
        '[[models]]\nalias = "gpt"\nsnapshot = "gpt-1"\nengine = "upstream"\n'
        '[models.upstream]\nbase_url = "http://127.0.0.1:9000/v1"\n'
    )

    chat, vec, echo, gpt = Settings.load(config).models

    assert isinstance(chat, LlamaCppModel) and (chat.engine, chat.threads) == ("llama_cpp", 2)
    assert isinstance(vec, SentenceTransformersModel) and isinstance(echo, EchoModel)
    assert isinstance(gpt, UpstreamModel) and gpt.deployment_names() == ["gpt/1"]


def test_an_upstream_model_without_its_upstream_table_is_refused(tmp_path: Path) -> None:
    error = _load_error(tmp_path, '[[models]]\nalias = "gpt"\nsnapshot = "gpt-1"\nengine = "upstream"\n')

    assert [(e["loc"], e["type"]) for e in error.errors()] == [(("models", 0, "upstream", "upstream"), "missing")]
    assert "models.0.upstream.upstream\n  Field required" in str(error)


def test_an_empty_upstream_list_is_refused() -> None:
    with pytest.raises(ValidationError, match="upstream\n  List should have at least 1 item"):
        UpstreamModel(alias="gpt", snapshot="gpt-1", upstream=[])


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ("[models.echo]\ntokens_per_second = 50\n", ("models", 0, "llama_cpp", "echo")),  # no engine: llama_cpp
        ('engine = "echo"\nprefill_chunk = 64\n', ("models", 0, "echo", "prefill_chunk")),
        (
            'engine = "upstream"\nthreads = 2\n[models.upstream]\nbase_url = "http://x/v1"\n',
            ("models", 0, "upstream", "threads"),
        ),
        (
            'engine = "sentence_transformers"\n[models.routing]\nretries = 1\n',
            ("models", 0, "sentence_transformers", "routing"),
        ),
    ],
)
def test_a_field_of_another_engine_is_refused(tmp_path: Path, entry: str, where: tuple[object, ...]) -> None:
    error = _load_error(tmp_path, f'[[models]]\nalias = "m"\nsnapshot = "m-1"\n{entry}')

    assert [(e["loc"], e["type"]) for e in error.errors()] == [(where, "extra_forbidden")]


def test_an_echo_field_on_a_llama_cpp_model_says_where_and_why(tmp_path: Path) -> None:
    toml = '[[models]]\nalias = "m"\nsnapshot = "m-1"\nengine = "llama_cpp"\necho = { tokens_per_second = 5 }\n'

    error = _load_error(tmp_path, toml)

    assert "models.0.llama_cpp.echo\n  Extra inputs are not permitted" in str(error)


def test_an_unknown_engine_lists_the_engines(tmp_path: Path) -> None:
    error = _load_error(tmp_path, '[[models]]\nalias = "m"\nsnapshot = "m-1"\nengine = "llama"\n')

    assert [(e["loc"], e["type"]) for e in error.errors()] == [(("models", 0), "union_tag_invalid")]
    assert "'llama' found using 'engine'" in str(error)
    assert "'llama_cpp', 'sentence_transformers', 'classifier', 'echo', 'upstream'" in str(error)


def test_the_model_settings_alias_validates_any_engine() -> None:
    adapter: TypeAdapter[ModelSettings] = TypeAdapter(ModelSettings)

    assert isinstance(adapter.validate_python({"alias": "m", "snapshot": "m-1"}), LlamaCppModel)
    assert isinstance(adapter.validate_python({"alias": "m", "snapshot": "m-1", "engine": "echo"}), EchoModel)


def test_models_from_the_environment_are_told_apart_by_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = {"alias": "gpt", "snapshot": "gpt-1", "engine": "upstream", "upstream": {"base_url": "http://x/v1"}}
    echo = {"alias": "echo", "snapshot": "echo-1", "engine": "echo", "echo": {"tokens_per_second": 5}}
    monkeypatch.setenv("PORTICO_MODELS", json.dumps([upstream, echo]))

    gpt, paced = Settings().models

    assert isinstance(gpt, UpstreamModel) and gpt.upstream[0].base_url == "http://x/v1"
    assert isinstance(paced, EchoModel) and paced.echo.tokens_per_second == 5


def test_export_to_environment_round_trips_every_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = {"alias": "gpt", "snapshot": "gpt-1", "upstream": {"base_url": "http://x/v1"}, "fallbacks": ["echo"]}
    original = Settings(
        models=[
            LlamaCppModel(alias="chat", snapshot="chat-1", path=Path("/models/chat.gguf")),
            SentenceTransformersModel(alias="vec", snapshot="vec-1", threads=1),
            EchoModel(alias="echo", snapshot="echo-1"),
            UpstreamModel.model_validate(upstream),
        ]
    )
    original.export_to_environment()
    try:
        assert Settings() == original
    finally:
        for name in original.model_dump():
            monkeypatch.delenv(f"PORTICO_{name.upper()}", raising=False)
