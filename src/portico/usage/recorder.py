"""Every request's usage, recorded off the request path: buffered in memory, written in batches.

``record`` only appends to a list. A background task writes the buffer every ``flush_interval_s`` (or as soon
as ``flush_batch`` records wait) in one INSERT. A failed write keeps the records for the next attempt, so a
database restart loses nothing; ``close`` writes what is left (graceful shutdown).

A job's records are held back instead (``hold``): its runner writes them in the transaction that finishes the job
(``held``, ``forget``), so a worker killed in between neither loses them nor bills a job that runs again twice.
``release`` hands whatever is still held to the buffer (an attempt that did not finish the job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields

from portico.storage.database import Database
from portico.storage.usage import insert_usage

logger = logging.getLogger("portico.usage")

# Beyond this many unwritten records (the database down for long), the oldest are dropped, loudly.
MAX_BUFFERED = 200_000
_CLOSE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class UsageRow:
    request_id: str
    organization_id: str
    project_id: str
    key_id: str | None
    model: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None
    status: int
    cancelled: bool
    outcome: str | None  # a content policy's action: content_policy_violation:<categories>, content_filter:...
    created_at: float
    day: str


# Row → dict by name: dataclasses.asdict deep-copies and costs about ten times more, on the event loop.
_COLUMNS = tuple(field.name for field in fields(UsageRow))


def usage_values(rows: Sequence[UsageRow]) -> list[dict[str, object]]:
    """``rows`` as the column values ``insert_usage`` takes."""
    return [{name: getattr(row, name) for name in _COLUMNS} for row in rows]


class UsageRecorder:
    def __init__(
        self,
        database: Database,
        *,
        flush_interval_s: float,
        flush_batch: int,
        also_flush: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self._database = database
        self._interval_s = flush_interval_s
        self._batch = flush_batch
        self._also_flush = also_flush
        self._buffer: list[UsageRow] = []
        self._held: dict[str, list[UsageRow]] = {}  # by request id: written by their job's runner
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def record(self, row: UsageRow) -> None:
        held = self._held.get(row.request_id)
        if held is not None:
            held.append(row)
            return
        self._buffer.append(row)
        if len(self._buffer) >= self._batch:
            self._wake.set()

    def hold(self, request_id: str) -> None:
        """Keep ``request_id``'s records out of the background writes until ``release``."""
        self._held.setdefault(request_id, [])

    def held(self, request_id: str) -> list[UsageRow]:
        """The records held for ``request_id`` so far, for its runner to write."""
        return list(self._held.get(request_id, ()))

    def forget(self, request_id: str, rows: Sequence[UsageRow]) -> None:
        """``rows`` (from ``held``) are written: drop them; the hold stays until ``release``."""
        held = self._held.get(request_id)
        if held is not None:
            del held[: len(rows)]

    def release(self, request_id: str) -> None:
        """End the hold: records still held are written like any other."""
        for row in self._held.pop(request_id, ()):
            self.record(row)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def flush(self) -> None:
        """Write everything recorded so far; on failure the records stay buffered and the error propagates."""
        async with self._flush_lock:
            while self._buffer:
                rows = self._buffer[: self._batch]
                async with self._database.session() as session:
                    await insert_usage(session, usage_values(rows))
                    await session.commit()
                del self._buffer[: len(rows)]
            for extra in self._also_flush:
                await extra()

    async def close(self) -> None:
        if self._task is not None:
            # Never cancel a write half-way (SQLite would stay locked and the final flush fail): wait for it.
            async with self._flush_lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for attempt in range(1, _CLOSE_ATTEMPTS + 1):
            try:
                await self.flush()
                return
            except Exception:
                logger.warning("usage flush failed at shutdown (attempt %d)", attempt, exc_info=True)
                await asyncio.sleep(0.2 * attempt)
        logger.error("usage records lost at shutdown", extra={"lost_records": len(self._buffer)})

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                logger.warning("usage flush failed; retrying", extra={"pending": len(self._buffer)}, exc_info=True)
                self._drop_overflow()

    def _drop_overflow(self) -> None:
        overflow = len(self._buffer) - MAX_BUFFERED
        if overflow > 0:
            del self._buffer[:overflow]
            logger.error("usage buffer full; oldest records dropped", extra={"lost_records": overflow})
