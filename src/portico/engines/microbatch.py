"""Micro-batching: inputs of requests that arrive close together share one call, run off the event loop.

The first waiting submission opens a batch; submissions arriving within ``window_s`` join it until it holds
``max_items`` items. The batch runs on the batcher's one worker thread, one batch at a time, and each
submission gets its own slice of the results. Submissions that arrive while a batch runs wait for the next
one, so under load batches fill up without waiting out the window.

Always the same thread, not ``asyncio.to_thread``'s shared pool: a pass never queues behind unrelated blocking
work, and thread-local set-up (PyTorch's thread count) is done once, by ``setup``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from portico.errors import EngineUnavailable

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False, slots=True)
class _Submission(Generic[T, R]):
    items: Sequence[T]
    results: asyncio.Future[list[R]]


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        run: Callable[[list[T]], list[R]],
        *,
        max_items: int,
        window_s: float,
        setup: Callable[[], None] | None = None,
    ) -> None:
        """``run`` maps a batch of items to one result per item, in order; it and ``setup`` (called once,
        before the first batch) run on the worker thread."""
        self._run = run
        self._setup = setup
        self._max_items = max_items
        self._window_s = window_s
        self._queue: asyncio.Queue[_Submission[T, R]] = asyncio.Queue()
        self._unanswered: set[_Submission[T, R]] = set()
        self._task: asyncio.Task[None] | None = None
        self._worker: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._worker = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="portico-microbatch", initializer=self._setup
        )
        self._task = asyncio.create_task(self._serve(self._worker))

    async def close(self) -> None:
        """Stop batching; submissions still waiting get ``EngineUnavailable``. A running batch finishes unseen."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._worker is not None:
            self._worker.shutdown(wait=False)
            self._worker = None
        for submission in self._unanswered:
            if not submission.results.done():
                submission.results.set_exception(
                    EngineUnavailable("The server is shutting down. Retry against another instance or later.")
                )

    async def submit(self, items: Sequence[T]) -> list[R]:
        """The results for ``items``, computed together with whatever else is submitted meanwhile."""
        if self._task is None:
            raise EngineUnavailable("The model is not loaded (the server is starting or stopping). Retry shortly.")
        submission = _Submission(items, asyncio.get_running_loop().create_future())
        self._unanswered.add(submission)
        self._queue.put_nowait(submission)
        try:
            return await submission.results
        finally:
            self._unanswered.discard(submission)

    async def _serve(self, worker: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            items = [item for submission in batch for item in submission.items]
            try:
                results = await loop.run_in_executor(worker, self._run, items)
            except Exception as exc:  # the batch's requests fail; the batcher goes on serving others
                for submission in batch:
                    if not submission.results.done():
                        submission.results.set_exception(exc)
                continue
            start = 0
            for submission in batch:
                end = start + len(submission.items)
                if not submission.results.done():
                    submission.results.set_result(results[start:end])
                start = end

    async def _collect(self) -> list[_Submission[T, R]]:
        """The first waiting submission and those that join it in time, less any whose caller gave up."""
        first = await self._queue.get()
        batch = [first]
        size = len(first.items)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._window_s):
                while size < self._max_items:
                    submission = await self._queue.get()
                    batch.append(submission)
                    size += len(submission.items)
        return [submission for submission in batch if not submission.results.done()]
