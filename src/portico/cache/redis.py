"""The Redis cache: entries shared by every process and host using the same Redis and key prefix.

A cache is an optimisation, so Redis errors never fail a request: a failed read is a miss, a failed write is
logged and dropped.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger("portico.cache")


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


class RedisCache:
    def __init__(self, client: Redis, *, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    async def get(self, key: str) -> bytes | None:
        try:
            value: bytes | str | None = await self._client.get(self._prefix + key)
        except RedisError as exc:
            logger.warning("cache read failed", extra={"error": str(exc)})
            return None
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, *, ttl_s: float) -> None:
        try:
            await self._client.set(self._prefix + key, value, px=max(1, round(ttl_s * 1000)))
        except RedisError as exc:
            logger.warning("cache write failed", extra={"error": str(exc)})

    async def forget(self, prefix: str) -> None:
        """Raises ``RedisError``: unlike a missed read, a deletion that did not happen must not pass silently."""
        pattern = _glob_escape(self._prefix + prefix) + "*"
        batch: list[bytes] = []
        async for key in self._client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await self._client.delete(*batch)
                batch.clear()
        if batch:
            await self._client.delete(*batch)

    async def close(self) -> None:
        await self._client.aclose()
