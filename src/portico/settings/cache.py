"""``[cache]``: the response cache, and the semantic cache inside it (docs/cache.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.constants import REDIS_PREFIX_CACHE


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
