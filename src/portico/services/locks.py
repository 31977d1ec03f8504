"""Per-key asyncio locks that exist only while someone holds or waits for them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from portico.errors import ConversationBusy


class KeyedLocks:
    """One asyncio lock per conversation, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    async def acquire(self, key: str, timeout_s: float) -> Callable[[], None]:
        """Wait for the lock; returns its release (idempotent). ConversationBusy after ``timeout_s``."""
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with asyncio.timeout(timeout_s):
                await lock.acquire()
        except TimeoutError:
            self._forget(key, users)
            raise ConversationBusy(
                "Another message of this conversation is still being answered. Retry when it has finished.",
                retry_after=1,
            ) from None
        except BaseException:
            self._forget(key, users)
            raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                lock.release()
                self._forget(key, users)

        return release

    def _forget(self, key: str, users: list[int]) -> None:
        users[0] -= 1
        if users[0] == 0:
            self._locks.pop(key, None)
