"""Semantic cache backends: per bucket (a set of otherwise equal requests), the newest answers with the
embedding of the text they answered. ``memory`` (one process) or ``redis`` (shared), as ``cache.backend`` says.

A backend only keeps entries; ``services/semantic_cache.py`` compares the vectors. Like the response cache it
never fails a request: an unreachable Redis is an empty bucket and a dropped write.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from portico.cache import REDIS_TIMEOUT_S
from portico.cache.redis import RedisCache
from portico.redis_client import redis_client
from portico.settings import Settings

logger = logging.getLogger("portico.cache")

# A stored Redis entry: expiry (Unix seconds, float64), the vector's byte length (uint32), vector, response.
_HEADER = struct.Struct("<dI")


@dataclass(frozen=True, slots=True)
class SemanticEntry:
    vector: bytes  # float32, unit length: the embedding of the text the response answered
    response: bytes  # the response body as JSON

    @property
    def size(self) -> int:
        return len(self.vector) + len(self.response)


class SemanticBackend(Protocol):
    async def entries(self, bucket: str) -> list[SemanticEntry]:
        """The bucket's unexpired entries, newest first; empty when absent or the backend is unreachable."""
        ...

    async def add(self, bucket: str, entry: SemanticEntry, *, ttl_s: float) -> None:
        """Keep ``entry`` for ``ttl_s`` seconds as the bucket's newest, dropping its oldest beyond the per-bucket
        cap. Never raises."""
        ...

    async def forget(self, prefix: str) -> None:
        """Drop every bucket whose name starts with ``prefix`` (one project's, on a data-deletion request)."""
        ...

    async def close(self) -> None: ...


class MemorySemanticCache:
    """Buckets in an LRU bounded by total entries and bytes; the least recently used bucket loses its oldest
    entries first."""

    def __init__(
        self,
        *,
        max_entries_per_bucket: int,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries_per_bucket = max_entries_per_bucket
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        # bucket → (entry, expires at), newest on the left
        self._buckets: OrderedDict[str, deque[tuple[SemanticEntry, float]]] = OrderedDict()
        self.entry_count = self.size_bytes = 0

    async def entries(self, bucket: str) -> list[SemanticEntry]:
        kept = self._buckets.get(bucket)
        if kept is None:
            return []
        now = self._clock()
        while kept and kept[-1][1] <= now:  # the oldest expire first: entries of a bucket share one TTL
            self._drop_oldest(bucket)
        if bucket not in self._buckets:
            return []
        self._buckets.move_to_end(bucket)
        return [entry for entry, _ in kept]

    async def add(self, bucket: str, entry: SemanticEntry, *, ttl_s: float) -> None:
        if entry.size > self.max_bytes:
            return  # would evict everything and still not fit
        kept = self._buckets.setdefault(bucket, deque())
        self._buckets.move_to_end(bucket)
        kept.appendleft((entry, self._clock() + ttl_s))
        self.entry_count += 1
        self.size_bytes += entry.size
        if len(kept) > self.max_entries_per_bucket:
            self._drop_oldest(bucket)
        while self.entry_count > self.max_entries or self.size_bytes > self.max_bytes:
            self._drop_oldest(next(iter(self._buckets)))  # the least recently used bucket

    def _drop_oldest(self, bucket: str) -> None:
        kept = self._buckets[bucket]
        entry, _ = kept.pop()
        self.entry_count -= 1
        self.size_bytes -= entry.size
        if not kept:
            del self._buckets[bucket]

    async def forget(self, prefix: str) -> None:
        for bucket in [bucket for bucket in self._buckets if bucket.startswith(prefix)]:
            while bucket in self._buckets:
                self._drop_oldest(bucket)

    async def close(self) -> None:
        self._buckets.clear()
        self.entry_count = self.size_bytes = 0


class RedisSemanticCache:
    """One Redis list per bucket, newest first, capped in length; the key expires ``ttl_s`` after the last write
    and each entry carries its own expiry, so an entry is never served longer than ``ttl_s``."""

    def __init__(self, client: Redis, *, prefix: str, max_entries_per_bucket: int) -> None:
        self._client = client
        self._prefix = prefix
        self.max_entries_per_bucket = max_entries_per_bucket
        self._keys = RedisCache(client, prefix=prefix)  # its prefix scan drops a project's buckets

    async def entries(self, bucket: str) -> list[SemanticEntry]:
        try:
            packed: list[bytes | str] = await self._client.lrange(self._prefix + bucket, 0, -1)
        except RedisError as exc:
            logger.warning("semantic cache read failed", extra={"error": str(exc)})
            return []
        now = time.time()
        # Entries are binary: a client built with decode_responses (str) would have mangled them.
        unpacked = (_unpack(raw) for raw in packed if isinstance(raw, bytes))
        return [entry for expires_at, entry in unpacked if expires_at > now]

    async def add(self, bucket: str, entry: SemanticEntry, *, ttl_s: float) -> None:
        key = self._prefix + bucket
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lpush(key, _pack(entry, time.time() + ttl_s))
                pipe.ltrim(key, 0, self.max_entries_per_bucket - 1)
                pipe.pexpire(key, max(1, round(ttl_s * 1000)))
                await pipe.execute()
        except RedisError as exc:
            logger.warning("semantic cache write failed", extra={"error": str(exc)})

    async def forget(self, prefix: str) -> None:
        """Raises ``RedisError``: a deletion that did not happen must not pass silently."""
        await self._keys.forget(prefix)

    async def close(self) -> None:
        await self._client.aclose()


def _pack(entry: SemanticEntry, expires_at: float) -> bytes:
    return _HEADER.pack(expires_at, len(entry.vector)) + entry.vector + entry.response


def _unpack(packed: bytes) -> tuple[float, SemanticEntry]:
    expires_at, vector_bytes = _HEADER.unpack_from(packed)
    start = _HEADER.size
    vector, response = packed[start : start + vector_bytes], packed[start + vector_bytes :]
    return expires_at, SemanticEntry(vector, response)


def build_semantic_backend(settings: Settings) -> SemanticBackend:
    """The backend ``cache.backend`` names; with ``redis``, its keys sit under ``<cache.key_prefix>semantic:``."""
    cache = settings.cache
    per_bucket = cache.semantic.max_entries_per_bucket
    if cache.backend == "memory":
        return MemorySemanticCache(
            max_entries_per_bucket=per_bucket, max_entries=cache.max_entries, max_bytes=cache.max_bytes
        )
    assert settings.redis_url is not None  # Settings validates this
    client = redis_client(settings.redis_url, timeout_s=REDIS_TIMEOUT_S)
    return RedisSemanticCache(client, prefix=f"{cache.key_prefix}semantic:", max_entries_per_bucket=per_bucket)
