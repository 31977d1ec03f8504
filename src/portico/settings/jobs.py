"""Work and data that outlive a request: idempotent replays, jobs and batches, webhooks, uploaded files."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


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
