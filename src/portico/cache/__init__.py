"""Response cache backends, chosen by name (``cache.backend``): ``memory`` (one process) or ``redis`` (shared)."""

from __future__ import annotations

from portico.cache.base import CacheBackend
from portico.cache.memory import MemoryCache
from portico.cache.redis import RedisCache
from portico.redis_client import redis_client
from portico.settings import Settings

REDIS_TIMEOUT_S = 0.5  # a slow cache must not cost more than the miss it would save


def build_cache_backend(settings: Settings) -> CacheBackend:
    cache = settings.cache
    if cache.backend == "memory":
        return MemoryCache(max_entries=cache.max_entries, max_bytes=cache.max_bytes)
    assert settings.redis_url is not None  # Settings validates this
    client = redis_client(settings.redis_url, timeout_s=REDIS_TIMEOUT_S)
    return RedisCache(client, prefix=cache.key_prefix)


__all__ = ["CacheBackend", "MemoryCache", "RedisCache", "build_cache_backend"]
