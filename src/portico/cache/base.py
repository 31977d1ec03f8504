"""The cache backend interface: opaque bytes under a string key, each entry expiring after its TTL."""

from __future__ import annotations

from typing import Protocol


class CacheBackend(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None`` (absent, expired, evicted or the backend unreachable)."""
        ...

    async def set(self, key: str, value: bytes, *, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds. Never raises: a value that is not stored is a later miss."""
        ...

    async def forget(self, prefix: str) -> None:
        """Drop every entry whose key starts with ``prefix`` (one project's, on a data-deletion request)."""
        ...

    async def close(self) -> None: ...
