"""From a request's API key to a ``Principal``, without a database round trip per request.

Key records are cached per process for ``ttl_s`` (at most a second), so a revocation, a rotation's end or a
limit change made by any process applies everywhere within that time. Concurrent misses for one key share one
database read. ``last_used_at`` is kept in memory and written in batches by ``flush_last_used``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from portico.auth.keys import parse_key, secret_matches
from portico.auth.principal import Principal, principal_of
from portico.errors import ExpiredApiKey, InvalidApiKey, RevokedApiKey
from portico.storage import control
from portico.storage.database import Database


@dataclass(frozen=True, slots=True)
class _KeyState:
    """What authentication needs of a key, detached from the database session."""

    principal: Principal
    secret_hash: str
    previous_secret_hash: str | None
    previous_valid_until: int | None
    expires_at: int | None
    revoked: bool


class Authenticator:
    def __init__(
        self, database: Database, server_secret: bytes, *, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._database = database
        self._server_secret = server_secret
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, _KeyState | None]] = {}
        self._loading: dict[str, asyncio.Future[_KeyState | None]] = {}
        self._last_used: dict[str, int] = {}

    async def authenticate(self, token: str) -> Principal:
        parts = parse_key(token)
        if parts is None:
            raise InvalidApiKey()
        state = await self._state(parts.key_id)
        if state is None:
            raise InvalidApiKey()
        now = int(time.time())
        current = secret_matches(self._server_secret, parts.secret, state.secret_hash)
        in_grace = state.previous_valid_until is not None and now < state.previous_valid_until
        if not current and not (
            in_grace and secret_matches(self._server_secret, parts.secret, state.previous_secret_hash)
        ):
            raise InvalidApiKey()
        if state.revoked:
            raise RevokedApiKey()
        if state.expires_at is not None and state.expires_at <= now:
            raise ExpiredApiKey()
        self._last_used[parts.key_id] = now
        return state.principal

    async def principal_for_key(self, key_id: str) -> Principal:
        """Who a stored request of ``key_id`` (a job, a batch line) acts as now: revoked or expired keys stop."""
        state = await self._state(key_id)
        if state is None or state.revoked:
            raise RevokedApiKey()
        if state.expires_at is not None and state.expires_at <= int(time.time()):
            raise ExpiredApiKey()
        return state.principal

    def forget(self, key_id: str) -> None:
        """Drop a cached key at once (this process changed it)."""
        self._cache.pop(key_id, None)

    async def flush_last_used(self) -> None:
        if not self._last_used:
            return
        pending, self._last_used = self._last_used, {}
        try:
            async with self._database.session() as session:
                await control.touch_keys(session, pending)
                await session.commit()
        except Exception:
            # Keep what was not written (newer uses win) and try again at the next flush.
            self._last_used = {**pending, **self._last_used}
            raise

    async def _state(self, key_id: str) -> _KeyState | None:
        cached = self._cache.get(key_id)
        if cached is not None and self._clock() - cached[0] < self._ttl_s:
            return cached[1]
        loading = self._loading.get(key_id)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[_KeyState | None] = asyncio.get_running_loop().create_future()
        self._loading[key_id] = future
        try:
            state = await self._load(key_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited failure is not logged twice
            raise
        else:
            future.set_result(state)
            self._cache[key_id] = (self._clock(), state)
            return state
        finally:
            del self._loading[key_id]

    async def _load(self, key_id: str) -> _KeyState | None:
        async with self._database.session() as session:
            key = await control.get_key(session, key_id)
        if key is None:
            return None
        return _KeyState(
            principal=principal_of(key),
            secret_hash=key.secret_hash,
            previous_secret_hash=key.previous_secret_hash,
            previous_valid_until=key.previous_valid_until,
            expires_at=key.expires_at,
            revoked=key.revoked_at is not None or key.project.archived_at is not None,
        )
