"""The one Settings object: environment (``PORTICO_`` prefix, ``__`` for nesting), then ``portico.toml``.

The TOML file is read from ``$PORTICO_CONFIG`` when set, else ``./portico.toml`` when it exists. The sections live
in the package's modules: ``models`` (the model table, one class per engine), ``engines`` (the sections only one
engine reads), ``access`` (auth, tiers, limits, usage, queue), ``jobs`` (idempotency, jobs, webhooks, files),
``cache`` and ``observability``; every name is importable from ``portico.settings``.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from portico.settings.access import (
    AuthSettings,
    LimitsSettings,
    QueueSettings,
    TierSettings,
    UsageSettings,
    default_tiers,
)
from portico.settings.cache import CacheSettings, SemanticCacheSettings
from portico.settings.engines import EchoSettings, RoutingSettings, SentenceTransformersSettings, UpstreamSettings
from portico.settings.jobs import FilesSettings, IdempotencySettings, JobsSettings, WebhookSettings
from portico.settings.models import (
    ClassifierModel,
    CommonModelSettings,
    EchoModel,
    EngineName,
    LifecycleSettings,
    LlamaCppModel,
    ModelSettings,
    PricingSettings,
    SentenceTransformersModel,
    SnapshotSettings,
    UpstreamModel,
    default_models,
)
from portico.settings.observability import MetricsSettings, TracingSettings

__all__ = [
    "LOOPBACK_HOSTS",
    "AuthSettings",
    "CacheSettings",
    "ClassifierModel",
    "CommonModelSettings",
    "EchoModel",
    "EchoSettings",
    "EngineName",
    "FilesSettings",
    "IdempotencySettings",
    "JobsSettings",
    "LifecycleSettings",
    "LimitsSettings",
    "LlamaCppModel",
    "MetricsSettings",
    "ModelSettings",
    "PricingSettings",
    "QueueSettings",
    "RoutingSettings",
    "SemanticCacheSettings",
    "SentenceTransformersModel",
    "SentenceTransformersSettings",
    "Settings",
    "SnapshotSettings",
    "TierSettings",
    "TracingSettings",
    "UpstreamModel",
    "UpstreamSettings",
    "UsageSettings",
    "WebhookSettings",
    "default_models",
    "default_tiers",
]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _reveal(value: Any) -> Any:
    """Secrets and paths as plain strings, for handing settings to child processes."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path | date):
        return str(value)
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PORTICO_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    host: str = Field(
        default="127.0.0.1", description="Address to bind. On anything but loopback, API keys are required by default."
    )
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    workers: int = Field(default=1, ge=1, description="Server processes; each loads its own models.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="`debug`, `info`, `warning` or `error`; logs are JSON lines on stderr."
    )

    models: list[ModelSettings] = Field(
        default_factory=default_models,
        description="The served models (see below); a list given in the file or the environment replaces the "
        "defaults, so list every model to serve.",
    )
    queue: QueueSettings = Field(default_factory=QueueSettings)

    request_timeout_s: float = Field(
        default=60.0, gt=0, description="A non-streamed generation running longer is stopped → 504 `timeout`."
    )
    heartbeat_interval_s: float = Field(
        default=15.0, gt=0, description="An SSE `: heartbeat` comment is sent this often while a stream is idle."
    )
    shutdown_timeout_s: int = Field(
        default=30,
        ge=1,
        description="On SIGTERM, requests in flight get this long to finish before they are cancelled (open "
        "streams end at once with a retryable error event; running jobs go back to the queue).",
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Larger request bodies → 413.")
    max_n: int = Field(default=8, ge=1, description="Upper bound for `n` (choices per request).")
    max_messages: int = Field(
        default=1024, ge=1, description="Most `messages` in one chat completion request; more → 400 (`param` says so)."
    )
    max_streams_per_key: int = Field(
        default=64,
        ge=1,
        description="Server-sent event streams one API key may hold open at once in a server process; one more → "
        "429 `too_many_streams`. Applies while auth is on.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request body must arrive within this (an upload: with no gap longer than this); a slower "
        "one → 408 `request_timeout` and the connection is closed.",
    )

    data_dir: Path = Field(
        default=Path("portico-data"),
        description="Where the SQLite database, uploaded files and the generated key secret live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL, e.g. `postgresql+asyncpg://user@host:5432/db`. Default: SQLite in "
        "`data_dir`. Migrations run on start (or `portico db upgrade`).",
    )
    database_schema: str | None = Field(
        default=None, description="PostgreSQL schema to keep Portico's tables in; default `public`."
    )
    redis_url: str | None = Field(
        default=None,
        description="e.g. `redis://127.0.0.1:6379/0`; needed by `limits.backend`, `cache.backend` = `redis`.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="A key `pk-key_<24 hex>-<64 hex>` made the bootstrap admin key (every scope, tier "
        "`unlimited`) on start.",
    )
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    tiers: list[TierSettings] = Field(
        default_factory=default_tiers,
        description="Tiers seeded into each new organization; see docs/control-plane.md.",
    )
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'portico.db'}"

    @property
    def files_directory(self) -> Path:
        return self.files.directory or self.data_dir / "files"

    @property
    def auth_enabled(self) -> bool:
        if self.auth.enabled is not None:
            return self.auth.enabled
        return self.host not in LOOPBACK_HOSTS

    @model_validator(mode="after")
    def _redis_backends_have_a_url(self) -> Settings:
        if self.limits.backend == "redis" and not self.redis_url:
            raise ValueError("limits.backend = 'redis' needs redis_url (PORTICO_REDIS_URL)")
        if self.cache.backend == "redis" and not self.redis_url:
            raise ValueError("cache.backend = 'redis' needs redis_url (PORTICO_REDIS_URL)")
        return self

    @model_validator(mode="after")
    def _model_names_are_unique(self) -> Settings:
        seen: set[str] = set()
        for model in self.models:
            for name in dict.fromkeys(model.names()):
                if name in seen:
                    raise ValueError(f"model name '{name}' is used by more than one model or snapshot")
                seen.add(name)
        return self

    @model_validator(mode="after")
    def _replacements_are_served(self) -> Settings:
        retired = {previous.id for model in self.models for previous in model.previous_snapshots if previous.retired}
        served = {name for model in self.models for name in model.names()} - retired
        for model in self.models:
            current = [(model.snapshot, model, {model.alias, model.snapshot})]
            for name, lifecycle, itself in current + [(p.id, p, {p.id}) for p in model.previous_snapshots]:
                replacement = lifecycle.replacement
                if replacement is not None and (replacement not in served or replacement in itself):
                    raise ValueError(
                        f"snapshot '{name}' names replacement '{replacement}', which is not another served, "
                        "unretired model name (an alias or a snapshot id)"
                    )
        return self

    @model_validator(mode="after")
    def _fallbacks_are_served(self) -> Settings:
        aliases = {model.alias for model in self.models}
        for model in self.models:
            for fallback in model.fallbacks:
                if fallback not in aliases:
                    raise ValueError(
                        f"model '{model.alias}' names fallback '{fallback}', which is no served model's alias"
                    )
        return self

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Settings from the environment and ``config_file`` (or ``$PORTICO_CONFIG``), then ``overrides``."""
        if config_file is not None:
            os.environ["PORTICO_CONFIG"] = str(config_file)  # worker processes read the same file
        return cls(**overrides)

    def export_to_environment(self) -> None:
        """Make these settings what ``Settings()`` builds in child processes (``serve --workers N``)."""
        for name, value in self.model_dump().items():
            if value is None:
                continue
            plain = _reveal(value)
            os.environ[f"PORTICO_{name.upper()}"] = (
                plain if isinstance(plain, str) else json.dumps(plain, default=_reveal)
            )

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
