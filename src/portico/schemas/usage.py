"""GET /v1/usage."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class UsageTotalsObject(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int
    cost_usd: float
    cancelled: int


class UsageBucketObject(UsageTotalsObject):
    key: str | None


class UsageReport(BaseModel):
    object: Literal["usage"] = "usage"
    start: float | None
    end: float | None
    group_by: Literal["model", "key", "endpoint", "day"] | None
    project: str | None
    totals: UsageTotalsObject
    buckets: list[UsageBucketObject]
