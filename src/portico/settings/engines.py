"""The sections of a model entry that only one engine reads: ``[models.echo]``, ``[models.sentence_transformers]``,
``[[models.upstream]]`` and ``[models.routing]``. Which engine takes which is in ``portico.settings.models``."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


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
    capabilities: list[Literal["chat", "completions", "embeddings", "moderation"]] = Field(
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
