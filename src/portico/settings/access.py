"""Who may call, and how much: API keys (``[auth]``), tiers, rate limits, usage metering and the admission queue."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from portico.safety.policy import ContentPolicy


class QueueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_waiting: int = Field(default=64, ge=0, description="Requests that may wait per model before 503s.")
    wait_timeout_s: float = Field(default=30.0, gt=0, description="Longest wait for an engine slot before 503.")


class TierSettings(BaseModel):
    """Default limits for a class of keys; ``null`` (or absent) means unlimited. Also a default content policy.
    Seeded into each new organization; afterwards managed with the admin API (/v1/admin/tiers)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    requests_per_minute: int | None = Field(default=None, ge=1)
    request_burst: int | None = Field(default=None, ge=1, description="Default: requests_per_minute.")
    tokens_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)
    budget_per_day_usd: float | None = Field(default=None, ge=0)
    budget_per_month_usd: float | None = Field(default=None, ge=0)
    content_policy: ContentPolicy | None = Field(
        default=None, description="The default policy for keys of this tier whose project has none."
    )


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
