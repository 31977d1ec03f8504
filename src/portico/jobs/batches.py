"""The batch runner: it claims batches, checks their input line by line, runs the lines at batch priority as the
key that created the batch, and writes the output and error files.

Durable and restartable. A runner holds a batch through a lease on its row, under ``jobs/leases.py``'s rules
(shared with the job runner): renewed every third of ``jobs.lease_s``, with the progress counts written at least
every second; a runner that stops cleanly frees its batches at once, and a dead one's lease lapses, so another
runner (or the restarted one) takes the batch over. It reads the results written so far back and runs only the
lines not yet answered: a line whose result was written is never run again (a line cut off mid-run runs again
from the start).

A line turned away for a transient reason (``leases.is_transient``: a per-minute limit, a full engine queue, ...)
is not failed: it waits out its backoff and tries again, until the completion window ends. Every other error
(also an exhausted daily quota or budget) is that line's answer, in the error file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from portico.constants import PREFIX_REQUEST, BatchStatus, Priority, Scope, new_id
from portico.errors import InsufficientScope, PorticoError
from portico.jobs.batch_lines import (
    InvalidLine,
    RequestLine,
    ResultFiles,
    UnusableInput,
    answer_unanswered,
    answered,
    check_input,
    failed,
    iter_lines,
    parse_line,
)
from portico.jobs.batch_row import BatchRow, BatchRun
from portico.jobs.context import WorkerContext
from portico.jobs.leases import LeaseLost, Leases, backoff_s, is_transient
from portico.observability.logging import request_id_var
from portico.storage import batches as queries
from portico.storage.files import FileStore, get_file
from portico.storage.resources import Batch

logger = logging.getLogger("portico.batches")

PROGRESS_INTERVAL_S = 1.0  # request_counts are written at least this often
MAX_ACTIVE_BATCHES = 4  # batches a runner holds at once; their lines share jobs.batch_concurrency
CLAIM_SCAN = 8  # free batches looked at per claim (others may take some of them first)

NOT_RUN = {
    BatchStatus.CANCELLED: ("batch_cancelled", "The batch was cancelled before this request ran."),
    BatchStatus.EXPIRED: ("batch_expired", "This request could not be executed before the completion window expired."),
}


class BatchRunner:
    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self.store = FileStore(context.settings.files_directory)
        self._leases = Leases(context.database, context.owner, context.settings.jobs.lease_s)
        self._row = BatchRow(context.database, self._leases)
        self._slots = asyncio.Semaphore(context.settings.jobs.batch_concurrency)
        self._active: dict[str, asyncio.Task[None]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        claiming = self._leases.claim_loop(
            self._claim,
            lambda: MAX_ACTIVE_BATCHES - len(self._active),
            poll_s=self.context.settings.jobs.poll_interval_s,
            stop=self._stopping,
            warn=_warn,
        )
        self._poller = asyncio.create_task(claiming, name="batch-runner")
        logger.info("batch runner started", extra={"owner": self.context.owner})

    async def close(self) -> None:
        """Stop claiming; cancel the running lines and free the batches at once for the next runner."""
        self._stopping.set()
        if self._poller is not None:
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        drivers = list(self._active.values())
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)

    # -- claiming ----------------------------------------------------------------------------------------
    async def _claim(self, limit: int) -> int:
        """Claim up to ``limit`` of the oldest batches nobody holds and start running them; how many."""

        async def take(session: AsyncSession, batch: Batch, now: float) -> bool:
            return await queries.claim(session, batch.id, self._leases.owner, now, self._leases.until(now))

        batches = await self._leases.claim(queries.claimable, take, limit=limit, scan=CLAIM_SCAN, held=self._active)
        for batch in batches:
            self._active[batch.id] = asyncio.create_task(self._drive(batch.id), name=batch.id)
        return len(batches)

    # -- one batch -----------------------------------------------------------------------------------------
    async def _drive(self, batch_id: str) -> None:
        run: BatchRun | None = None
        release = True  # on shutdown, free the batch at once; a finished or lost batch is no longer ours
        try:
            run = await self._open(batch_id)
            if run is None:
                return
            async with asyncio.TaskGroup() as group:
                beat = functools.partial(self._row.beat, run)
                heartbeat = group.create_task(
                    self._leases.keep(
                        beat, check_every_s=PROGRESS_INTERVAL_S, warn=functools.partial(_warn, batch_id=batch_id)
                    )
                )
                try:
                    await self._work(run)
                finally:
                    heartbeat.cancel()
            release = False
        except* LeaseLost:
            release = False
            logger.warning("batch lost its lease; another runner has it, or it was erased", extra={"batch": batch_id})
            if run is not None and run.erased:
                await run.results.remove()
        except* Exception:
            # Kept leased: it is tried again once the lease lapses, so a batch that keeps failing backs off.
            release = False
            logger.exception(
                "batch runner error; the batch is retried when its lease lapses", extra={"batch": batch_id}
            )
        finally:
            if run is not None:
                run.results.close()
                if release:
                    await self._row.release(run)
            self._active.pop(batch_id, None)

    async def _open(self, batch_id: str) -> BatchRun | None:
        async with self.context.database.session() as session:
            batch = await queries.held(session, batch_id, self.context.owner)
        if batch is None:
            return None
        return BatchRun(batch, ResultFiles(self.store, batch.project_id, batch.id))

    async def _work(self, run: BatchRun) -> None:
        input_path = await self._input_path(run.batch)
        if input_path is None:
            await self._row.fail(
                run, UnusableInput("input_file_unavailable", "The batch's input file no longer exists.")
            )
            return
        if run.batch.in_progress_at is None:  # not validated yet (or a restart cut validation short)
            if not await self._validate(run, input_path):
                return
        else:
            await run.results.open(fresh=False)
        status = await self._row.status(run)
        if status is BatchStatus.CANCELLING:
            run.wind_down(BatchStatus.CANCELLED)
        elif status is BatchStatus.IN_PROGRESS:
            await self._run_lines(run, input_path)
            if run.results.completed + run.results.failed < run.batch.request_total:
                run.wind_down(BatchStatus.EXPIRED)  # the window ended while the last lines waited to retry
        if run.stop is not None:
            await answer_unanswered(input_path, run.batch.endpoint, run.results, *NOT_RUN[run.stop])
            await self._row.finish(run, run.stop)
        else:
            await self._row.finish(run, BatchStatus.COMPLETED)

    async def _input_path(self, batch: Batch) -> Path | None:
        async with self.context.database.session() as session:
            row = await get_file(session, batch.project_id, batch.input_file_id)
        if row is None:
            return None
        path = self.store.path(row.path)
        return path if await asyncio.to_thread(path.exists) else None

    async def _validate(self, run: BatchRun, input_path: Path) -> bool:
        """Check every line; invalid ones are answered in the error file. False if the batch failed instead."""
        await run.results.open(fresh=True)
        checked = await check_input(input_path, run.batch.endpoint, run.results)
        if isinstance(checked, UnusableInput):
            await self._row.fail(run, checked)
            return False
        await run.results.sync()
        await self._row.validated(run, total=checked)
        return True

    async def _run_lines(self, run: BatchRun, input_path: Path) -> None:
        async with asyncio.TaskGroup() as group, contextlib.aclosing(iter_lines(input_path)) as lines:
            async for number, raw, _ in lines:
                if run.stopping():
                    break
                if not raw.strip():
                    continue
                line = parse_line(raw, number, run.batch.endpoint)
                if isinstance(line, InvalidLine) or line.custom_id in run.results.done:
                    continue
                await self._slots.acquire()
                if run.stopping():
                    self._slots.release()
                    break
                task = group.create_task(self._run_line(run, line))
                run.in_flight.add(task)
                # A callback, not a finally: a task cancelled before its first step never runs its body.
                task.add_done_callback(self._line_done(run))

    def _line_done(self, run: BatchRun) -> Any:
        def done(task: asyncio.Task[None]) -> None:
            run.in_flight.discard(task)
            self._slots.release()

        return done

    async def _run_line(self, run: BatchRun, line: RequestLine) -> None:
        request_id = new_id(PREFIX_REQUEST)
        request_id_var.set(request_id)  # this task's own context: its usage record and logs carry the id
        refusals = 0
        while time.time() < run.batch.expires_at:
            try:
                principal = await self.context.control.principal_for(run.batch.key_id)
                if Scope.INFERENCE not in principal.scopes:
                    raise InsufficientScope(Scope.INFERENCE)
                generated = await self.context.generation.run(
                    run.batch.endpoint, line.body, principal, priority=Priority.BATCH
                )
            except PorticoError as exc:
                if not is_transient(exc):
                    run.results.add(failed(line, request_id, exc))
                    return
                refusals += 1
                wait = backoff_s(refusals, retry_after=exc.retry_after)
                await asyncio.sleep(min(wait, max(0.0, run.batch.expires_at - time.time())))
            except Exception:
                logger.exception("batch line failed", extra={"batch": run.batch.id, "custom_id": line.custom_id})
                unexpected = PorticoError("The server hit an unexpected error running this request.")
                run.results.add(failed(line, request_id, unexpected))
                return
            else:
                run.results.add(answered(line, request_id, generated.body))
                return
        # The window ended while the line waited: left unanswered, the batch's expiry answers it.


def _warn(what: str, exc: Exception, *, batch_id: str | None = None) -> None:
    """A database or limits outage in a line; anything else with its traceback."""
    extra = {"batch": batch_id} if batch_id else {}
    if isinstance(exc, PorticoError):
        logger.warning("%s: %s", what, exc.message, extra=extra)
    else:
        logger.warning(what, exc_info=exc, extra=extra)
