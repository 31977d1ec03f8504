"""The batch runner: it claims batches, checks their input line by line, runs the lines at batch priority as the
key that created the batch, and writes the output and error files.

Durable and restartable. A runner holds a batch through a lease on its row (``lease_owner``,
``lease_expires_at``), renewed every third of ``jobs.lease_s`` (at least every second, with the progress counts);
a runner that stops cleanly frees its batches at once, and a dead one's lease lapses, so another runner (or the
restarted one) takes the batch over. It reads the results written so far back and runs only the lines not yet
answered: a line whose result was written is never run again (a line cut off mid-run runs again from the start).

A line turned away by the key's limits (429) or by a full engine queue (503) is not failed: it waits as long as
the error's ``Retry-After`` says (without one: 1 s, doubling up to 60 s) and tries again, until the completion
window ends. Every other error is that line's answer, in the error file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from portico.constants import PREFIX_FILE, PREFIX_REQUEST, BatchStatus, FilePurpose, Priority, Scope, new_id
from portico.errors import InsufficientScope, PorticoError, RateLimited
from portico.jobs.batch_lines import (
    InvalidLine,
    RequestLine,
    ResultFiles,
    answered,
    failed,
    invalid,
    iter_lines,
    not_run,
    parse_line,
)
from portico.jobs.context import WorkerContext
from portico.observability.logging import request_id_var
from portico.storage import batches as queries
from portico.storage.files import FileStore, get_file
from portico.storage.resources import Batch, File

logger = logging.getLogger("portico.batches")

PROGRESS_INTERVAL_S = 1.0  # request_counts are written at least this often
MAX_ACTIVE_BATCHES = 4  # batches a runner holds at once; their lines share jobs.batch_concurrency
CLAIM_SCAN = 8
RETRY_MIN_S = 0.05  # the least wait before a retry, whatever Retry-After says
RETRY_FIRST_S = 1.0  # without a Retry-After: the first wait, doubled each time up to RETRY_MAX_S
RETRY_MAX_S = 60.0

NOT_RUN = {
    BatchStatus.CANCELLED: ("batch_cancelled", "The batch was cancelled before this request ran."),
    BatchStatus.EXPIRED: ("batch_expired", "This request could not be executed before the completion window expired."),
}


class LeaseLost(Exception):
    """The batch is no longer this runner's: its lease lapsed and another runner took it, or it was erased."""


@dataclass(eq=False)
class _Run:
    batch: Batch  # as claimed
    results: ResultFiles
    stop: BatchStatus | None = None  # CANCELLED or EXPIRED once the batch must wind down
    erased: bool = False
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    # Held while the row is written: the heartbeat must not renew a lease the final write just released.
    row_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    finished: bool = False

    def wind_down(self, outcome: BatchStatus) -> None:
        """Start no more lines; cancel the running ones (they are answered with ``outcome``'s error)."""
        if self.stop is None:
            self.stop = outcome
            for task in self.in_flight:
                task.cancel()

    def stopping(self) -> bool:
        if self.stop is None and time.time() >= self.batch.expires_at:
            self.wind_down(BatchStatus.EXPIRED)
        return self.stop is not None


def _retry_later(exc: PorticoError) -> bool:
    """The key's limits or the engine's queue turned the line away for now: wait rather than fail it."""
    return isinstance(exc, RateLimited) or (exc.retryable and exc.status_code == 503)


class BatchRunner:
    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self.store = FileStore(context.settings.files_directory)
        self._lease_s = context.settings.jobs.lease_s
        self._slots = asyncio.Semaphore(context.settings.jobs.batch_concurrency)
        self._active: dict[str, asyncio.Task[None]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._poller = asyncio.create_task(self._poll(), name="batch-runner")
        logger.info("batch runner started", extra={"owner": self.context.owner})

    async def close(self) -> None:
        """Stop claiming; cancel the running lines and free the batches at once for the next runner."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        drivers = list(self._active.values())
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)

    # -- claiming ----------------------------------------------------------------------------------------
    async def _poll(self) -> None:
        while True:
            claimed = None
            if len(self._active) < MAX_ACTIVE_BATCHES:
                try:
                    claimed = await self.claim_next()
                except PorticoError as exc:
                    logger.warning("could not look for batches to run: %s", exc.message)
                except Exception:
                    logger.exception("could not look for batches to run; trying again")
            if claimed is None:
                await asyncio.sleep(self.context.settings.jobs.poll_interval_s)

    async def claim_next(self) -> str | None:
        """Claim the oldest batch nobody holds and start running it; its id, or None if there is none."""
        now = time.time()
        async with self.context.database.session() as session:
            for batch_id in await queries.claimable(session, now, limit=CLAIM_SCAN):
                if await queries.claim(session, batch_id, self.context.owner, now, self._lease_s):
                    await session.commit()
                    self._active[batch_id] = asyncio.create_task(self._drive(batch_id), name=batch_id)
                    return batch_id
        return None

    # -- one batch -----------------------------------------------------------------------------------------
    async def _drive(self, batch_id: str) -> None:
        run: _Run | None = None
        release = True  # on shutdown, free the batch at once; a finished or lost batch is no longer ours
        try:
            run = await self._open(batch_id)
            if run is None:
                return
            async with asyncio.TaskGroup() as group:
                heartbeat = group.create_task(self._heartbeat(run))
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
                    await self._release(run)
            self._active.pop(batch_id, None)

    async def _open(self, batch_id: str) -> _Run | None:
        async with self.context.database.session() as session:
            batch = await queries.held(session, batch_id, self.context.owner)
        if batch is None:
            return None
        return _Run(batch, ResultFiles(self.store, batch.project_id, batch.id))

    async def _work(self, run: _Run) -> None:
        input_path = await self._input_path(run.batch)
        if input_path is None:
            await self._fail(run, "input_file_unavailable", "The batch's input file no longer exists.")
            return
        if run.batch.in_progress_at is None:  # not validated yet (or a restart cut validation short)
            if not await self._validate(run, input_path):
                return
        else:
            await run.results.open(fresh=False)
        status = await self._status(run)
        if status is BatchStatus.CANCELLING:
            run.wind_down(BatchStatus.CANCELLED)
        elif status is BatchStatus.IN_PROGRESS:
            await self._run_lines(run, input_path)
            if run.results.completed + run.results.failed < run.batch.request_total:
                run.wind_down(BatchStatus.EXPIRED)  # the window ended while the last lines waited to retry
        if run.stop is not None:
            await self._answer_not_run(run, input_path, run.stop)
            await self._finish(run, run.stop)
        else:
            await self._finish(run, BatchStatus.COMPLETED)

    async def _input_path(self, batch: Batch) -> Path | None:
        async with self.context.database.session() as session:
            row = await get_file(session, batch.project_id, batch.input_file_id)
        if row is None:
            return None
        path = self.store.path(row.path)
        return path if await asyncio.to_thread(path.exists) else None

    async def _validate(self, run: _Run, input_path: Path) -> bool:
        """Check every line; invalid ones are answered in the error file. False if the batch failed instead."""
        await run.results.open(fresh=True)
        seen: dict[str, int] = {}
        total = 0
        async with contextlib.aclosing(iter_lines(input_path)) as lines:
            async for number, raw, _ in lines:
                if not raw.strip():
                    continue
                total += 1
                line = parse_line(raw, number, run.batch.endpoint)
                if line.custom_id is not None:
                    if line.custom_id in seen:
                        message = (
                            f"Line {number} repeats the custom_id '{line.custom_id}' of line "
                            f"{seen[line.custom_id]}; each line needs its own custom_id."
                        )
                        await self._fail(run, "duplicate_custom_id", message, param="custom_id", line=number)
                        return False
                    seen[line.custom_id] = number
                if isinstance(line, InvalidLine):
                    run.results.add(invalid(line))
        if total == 0:
            await self._fail(run, "empty_file", "The input file has no lines; put one request on each line.")
            return False
        await run.results.sync()
        now = int(time.time())
        async with self.context.database.session() as session:
            validated = await queries.update_held(
                session,
                run.batch.id,
                self.context.owner,
                BatchStatus.VALIDATING,
                BatchStatus.CANCELLING,
                in_progress_at=now,
                request_total=total,
                request_failed=run.results.failed,
            )
            if not validated:
                await self._lost(session, run)
            await queries.update_held(
                session, run.batch.id, self.context.owner, BatchStatus.VALIDATING, status=BatchStatus.IN_PROGRESS
            )
            await session.commit()
        run.batch.request_total = total
        return True

    async def _run_lines(self, run: _Run, input_path: Path) -> None:
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

    def _line_done(self, run: _Run) -> Any:
        def done(task: asyncio.Task[None]) -> None:
            run.in_flight.discard(task)
            self._slots.release()

        return done

    async def _run_line(self, run: _Run, line: RequestLine) -> None:
        request_id = new_id(PREFIX_REQUEST)
        request_id_var.set(request_id)  # this task's own context: its usage record and logs carry the id
        delay = RETRY_FIRST_S
        while time.time() < run.batch.expires_at:
            try:
                principal = await self.context.control.principal_for(run.batch.key_id)
                if Scope.INFERENCE not in principal.scopes:
                    raise InsufficientScope(Scope.INFERENCE)
                generated = await self.context.generation.run(
                    run.batch.endpoint, line.body, principal, priority=Priority.BATCH
                )
            except PorticoError as exc:
                if not _retry_later(exc):
                    run.results.add(failed(line, request_id, exc))
                    return
                if exc.retry_after is not None:  # jittered, so lines turned away together do not return together
                    wait = max(exc.retry_after, RETRY_MIN_S) * random.uniform(1.0, 1.25)
                else:
                    wait, delay = delay, min(delay * 2, RETRY_MAX_S)
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

    async def _answer_not_run(self, run: _Run, input_path: Path, outcome: BatchStatus) -> None:
        code, message = NOT_RUN[outcome]
        async for number, raw, _ in iter_lines(input_path):
            if not raw.strip():
                continue
            line = parse_line(raw, number, run.batch.endpoint)
            if isinstance(line, RequestLine) and line.custom_id not in run.results.done:
                run.results.add(not_run(line.custom_id, code, message))

    # -- the row -----------------------------------------------------------------------------------------
    async def _heartbeat(self, run: _Run) -> None:
        """Renew the lease and write the counts; notice a cancel or the end of the completion window."""
        interval = min(self._lease_s / 3, PROGRESS_INTERVAL_S)
        while True:
            await asyncio.sleep(interval)
            try:
                async with run.row_lock:
                    if run.finished:
                        return
                    status = await self._renew(run)
            except LeaseLost:
                raise
            except PorticoError as exc:  # the database is unreachable for now: the lease has some slack
                logger.warning("could not renew a batch's lease: %s", exc.message, extra={"batch": run.batch.id})
                continue
            if status is BatchStatus.CANCELLING:
                run.wind_down(BatchStatus.CANCELLED)
            run.stopping()

    async def _renew(self, run: _Run) -> BatchStatus:
        async with self.context.database.session() as session:
            renewed = await queries.update_held(
                session,
                run.batch.id,
                self.context.owner,
                lease_expires_at=time.time() + self._lease_s,
                request_completed=run.results.completed,
                request_failed=run.results.failed,
            )
            if not renewed:
                await self._lost(session, run)
            status = await self._read_status(session, run)
            await session.commit()
        return status

    async def _status(self, run: _Run) -> BatchStatus:
        async with self.context.database.session() as session:
            return await self._read_status(session, run)

    async def _read_status(self, session: AsyncSession, run: _Run) -> BatchStatus:
        batch = await queries.held(session, run.batch.id, self.context.owner)
        if batch is None:
            await self._lost(session, run)
        run.batch.expires_at = batch.expires_at
        return BatchStatus(batch.status)

    async def _lost(self, session: AsyncSession, run: _Run) -> NoReturn:
        run.erased = not await queries.exists(session, run.batch.id)
        raise LeaseLost(run.batch.id)

    async def _release(self, run: _Run) -> None:
        try:
            async with self.context.database.session() as session:
                await queries.update_held(
                    session,
                    run.batch.id,
                    self.context.owner,
                    lease_owner=None,
                    lease_expires_at=None,
                    request_completed=run.results.completed,
                    request_failed=run.results.failed,
                )
                await session.commit()
        except PorticoError as exc:
            logger.warning("could not free a batch (its lease will lapse): %s", exc.message)

    async def _fail(self, run: _Run, code: str, message: str, **where: Any) -> None:
        """The input file cannot be used at all: the batch fails with no output."""
        error = {"code": code, "message": message, "param": where.get("param"), "line": where.get("line")}
        async with run.row_lock, self.context.database.session() as session:
            run.finished = True
            done = await queries.update_held(
                session,
                run.batch.id,
                self.context.owner,
                *queries.ACTIVE_STATUSES,
                status=BatchStatus.FAILED,
                failed_at=int(time.time()),
                errors=[error],
                lease_owner=None,
                lease_expires_at=None,
            )
            if not done:
                await self._lost(session, run)
            await session.commit()
        await run.results.remove()

    async def _finish(self, run: _Run, outcome: BatchStatus) -> None:
        """Commit the output and error files' rows and the final status in one transaction."""
        await run.results.sync()
        if outcome is BatchStatus.COMPLETED:
            outcome = await self._enter_finalizing(run)
        now = int(time.time())
        files = {
            "output_file_id": self._result_file(run, run.results.output_path, run.results.output.size, now),
            "error_file_id": self._result_file(run, run.results.error_path, run.results.errors.size, now),
        }
        allowed = {
            BatchStatus.COMPLETED: (BatchStatus.FINALIZING,),
            BatchStatus.CANCELLED: (BatchStatus.CANCELLING,),
            BatchStatus.EXPIRED: queries.ACTIVE_STATUSES,
        }[outcome]
        async with run.row_lock, self.context.database.session() as session:
            run.finished = True
            session.add_all(row for row in files.values() if row is not None)
            done = await queries.update_held(
                session,
                run.batch.id,
                self.context.owner,
                *allowed,
                status=outcome,
                **{f"{outcome.value}_at": now},
                **{name: row.id if row is not None else None for name, row in files.items()},
                request_completed=run.results.completed,
                request_failed=run.results.failed,
                lease_owner=None,
                lease_expires_at=None,
            )
            if not done:
                await session.rollback()
                await self._lost(session, run)
            await session.commit()
        logger.info(
            "batch finished",
            extra={
                "batch": run.batch.id,
                "status": outcome.value,
                "completed": run.results.completed,
                "failed": run.results.failed,
            },
        )

    async def _enter_finalizing(self, run: _Run) -> BatchStatus:
        """``in_progress`` → ``finalizing``; a cancel that arrived first makes the outcome ``cancelled``."""
        async with self.context.database.session() as session:
            entered = await queries.update_held(
                session,
                run.batch.id,
                self.context.owner,
                BatchStatus.IN_PROGRESS,
                status=BatchStatus.FINALIZING,
                finalizing_at=int(time.time()),
            )
            await session.commit()
        status = BatchStatus.FINALIZING if entered else await self._status(run)  # resumed in finalizing, or not
        return BatchStatus.CANCELLED if status is BatchStatus.CANCELLING else BatchStatus.COMPLETED

    def _result_file(self, run: _Run, path: str, size: int, now: int) -> File | None:
        if size == 0:
            return None
        kind = "output" if path == run.results.output_path else "error"
        return File(
            id=new_id(PREFIX_FILE),
            project_id=run.batch.project_id,
            filename=f"{run.batch.id}_{kind}.jsonl",
            purpose=FilePurpose.BATCH_OUTPUT,
            bytes=size,
            path=path,
            created_at=now,
        )
