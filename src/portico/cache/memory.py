"""The in-process cache: an LRU bounded by entry count and total bytes, with a TTL per entry."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class MemoryCache:
    def __init__(self, *, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # key → (value, expires at)
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, *, ttl_s: float) -> None:
        if len(value) > self.max_bytes:
            return  # would evict everything and still not fit
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (value, self._clock() + ttl_s)
        self.size_bytes += len(value)
        while len(self._entries) > self.max_entries or self.size_bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))  # the least recently used

    def _remove(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self.size_bytes -= len(value)

    async def forget(self, prefix: str) -> None:
        for key in [key for key in self._entries if key.startswith(prefix)]:
            self._remove(key)

    async def close(self) -> None:
        self._entries.clear()
        self.size_bytes = 0
