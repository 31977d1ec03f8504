"""The admission queue in front of an engine: a bounded number of waiters for a bounded number of slots.

Waiters are served by priority class (interactive, then jobs, then batches), then in arrival order. A full
queue, or a wait past the deadline, is ``EngineOverloaded`` with a Retry-After estimated from the queue depth
and recent service times.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from portico.constants import Priority
from portico.errors import EngineOverloaded
from portico.observability import metrics, tracing

# Weight of the newest service time in the moving average used for Retry-After.
_SERVICE_TIME_SMOOTHING = 0.2


class AdmissionQueue:
    def __init__(self, *, slots: int, max_waiting: int, wait_timeout_s: float, model: str = "") -> None:
        self.model = model  # the label of its queue metrics
        self._free = slots
        self._slots = slots
        self._max_waiting = max_waiting
        self._wait_timeout_s = wait_timeout_s
        self._heap: list[tuple[Priority, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._mean_service_s = 1.0
        self.waiting = 0

    @property
    def busy_slots(self) -> int:
        return self._slots - self._free

    def retry_after_s(self) -> int:
        """Seconds until a retry is likely to find room: the queue ahead drained at the recent pace."""
        return max(1, math.ceil((self.waiting + 1) * self._mean_service_s / self._slots))

    def ensure_room(self) -> None:
        """Fail fast (before a response starts) when a new request could not even join the queue."""
        if self._free == 0 and self.waiting >= self._max_waiting:
            raise EngineOverloaded(
                f"The engine is busy and {self.waiting} requests are already waiting. Retry later.",
                retry_after=self.retry_after_s(),
            )

    @asynccontextmanager
    async def slot(self, priority: Priority = Priority.INTERACTIVE) -> AsyncIterator[None]:
        arrived = time.monotonic()
        with tracing.span("portico.queue_wait", model=self.model):
            await self._acquire(priority)
        started = time.monotonic()
        metrics.observe_queue_wait(self.model, started - arrived)
        try:
            with tracing.span("portico.engine", model=self.model):
                yield
        finally:
            elapsed = time.monotonic() - started
            self._mean_service_s += _SERVICE_TIME_SMOOTHING * (elapsed - self._mean_service_s)
            self._release()

    async def _acquire(self, priority: Priority) -> None:
        if self._free > 0 and not self.waiting:
            self._set_free(self._free - 1)
            return
        self.ensure_room()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (priority, next(self._arrivals), future))
        self._set_waiting(self.waiting + 1)
        try:
            async with asyncio.timeout(self._wait_timeout_s):
                await future
        except BaseException as exc:
            if future.done() and not future.cancelled():
                self._release()  # the slot was handed to us as we gave up: pass it on
            else:
                future.cancel()
                self._set_waiting(self.waiting - 1)
            if isinstance(exc, TimeoutError):
                raise EngineOverloaded(
                    f"No engine slot freed up within {self._wait_timeout_s:g} s. Retry later.",
                    retry_after=self.retry_after_s(),
                ) from exc
            raise

    def _set_waiting(self, waiting: int) -> None:
        self.waiting = waiting
        metrics.queue_depth(self.model, waiting)

    def _release(self) -> None:
        while self._heap:
            _, _, future = heapq.heappop(self._heap)
            if not future.done():
                self._set_waiting(self.waiting - 1)
                future.set_result(None)  # the slot passes on: still busy
                return
        self._set_free(self._free + 1)

    def _set_free(self, free: int) -> None:
        self._free = free
        metrics.busy_slots(self.model, self.busy_slots)
