"""A batch while a runner holds it (``BatchRun``), and its row as that runner writes it (``BatchRow``): every write
is conditional on the lease and raises ``LeaseLost`` once it is gone; the final write commits the status, the
result files' rows and the lease's release in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from portico.constants import BatchStatus
from portico.errors import PorticoError
from portico.jobs.batch_lines import ResultFiles, UnusableInput
from portico.jobs.leases import LeaseLost, Leases, released
from portico.storage import batches as queries
from portico.storage.database import Database
from portico.storage.resources import Batch

logger = logging.getLogger("portico.batches")


@dataclass(eq=False)
class BatchRun:
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


class BatchRow:
    """The batch runner's writes to the rows of the batches it holds."""

    def __init__(self, database: Database, leases: Leases) -> None:
        self._database = database
        self._leases = leases
        self._owner = leases.owner

    async def beat(self, run: BatchRun, renew: bool) -> None:
        """Write the counts (and renew the lease); notice a cancel or the end of the completion window."""
        async with run.row_lock:
            if run.finished:  # the final write released the lease: renewing now would take it again
                return
            values: dict[str, Any] = {"request_completed": run.results.completed, "request_failed": run.results.failed}
            if renew:
                values["lease_expires_at"] = self._leases.until(time.time())
            async with self._database.session() as session:
                if not await queries.update_held(session, run.batch.id, self._owner, **values):
                    await self._lost(session, run)
                status = await self._read_status(session, run)
                await session.commit()
        if status is BatchStatus.CANCELLING:
            run.wind_down(BatchStatus.CANCELLED)
        run.stopping()

    async def validated(self, run: BatchRun, *, total: int) -> None:
        """``validating`` → ``in_progress``, with the count of requests and of invalid lines (answered already).
        A batch cancelled while it was validated stays ``cancelling``, with the counts."""
        async with self._database.session() as session:
            validated = await queries.update_held(
                session,
                run.batch.id,
                self._owner,
                BatchStatus.VALIDATING,
                BatchStatus.CANCELLING,
                in_progress_at=int(time.time()),
                request_total=total,
                request_failed=run.results.failed,
            )
            if not validated:
                await self._lost(session, run)
            await queries.update_held(
                session, run.batch.id, self._owner, BatchStatus.VALIDATING, status=BatchStatus.IN_PROGRESS
            )
            await session.commit()
        run.batch.request_total = total

    async def status(self, run: BatchRun) -> BatchStatus:
        async with self._database.session() as session:
            return await self._read_status(session, run)

    async def _read_status(self, session: AsyncSession, run: BatchRun) -> BatchStatus:
        batch = await queries.held(session, run.batch.id, self._owner)
        if batch is None:
            await self._lost(session, run)
        run.batch.expires_at = batch.expires_at
        return BatchStatus(batch.status)

    async def _lost(self, session: AsyncSession, run: BatchRun) -> NoReturn:
        run.erased = not await queries.exists(session, run.batch.id)
        raise LeaseLost(run.batch.id)

    async def release(self, run: BatchRun) -> None:
        try:
            async with self._database.session() as session:
                await queries.update_held(
                    session,
                    run.batch.id,
                    self._owner,
                    **released(),
                    request_completed=run.results.completed,
                    request_failed=run.results.failed,
                )
                await session.commit()
        except PorticoError as exc:
            logger.warning("could not free a batch (its lease will lapse): %s", exc.message)

    async def fail(self, run: BatchRun, problem: UnusableInput) -> None:
        """The input file cannot be used at all: the batch fails with no output."""
        async with run.row_lock, self._database.session() as session:
            run.finished = True
            done = await queries.update_held(
                session,
                run.batch.id,
                self._owner,
                *queries.ACTIVE_STATUSES,
                status=BatchStatus.FAILED,
                failed_at=int(time.time()),
                errors=[problem.error()],
                **released(),
            )
            if not done:
                await self._lost(session, run)
            await session.commit()
        await run.results.remove()

    async def finish(self, run: BatchRun, outcome: BatchStatus) -> None:
        """Commit the output and error files' rows and the final status in one transaction."""
        await run.results.sync()
        if outcome is BatchStatus.COMPLETED:
            outcome = await self._enter_finalizing(run)
        now = int(time.time())
        files = run.results.file_rows(now)
        allowed = {
            BatchStatus.COMPLETED: (BatchStatus.FINALIZING,),
            BatchStatus.CANCELLED: (BatchStatus.CANCELLING,),
            BatchStatus.EXPIRED: queries.ACTIVE_STATUSES,
        }[outcome]
        async with run.row_lock, self._database.session() as session:
            run.finished = True
            session.add_all(row for row in files.values() if row is not None)
            done = await queries.update_held(
                session,
                run.batch.id,
                self._owner,
                *allowed,
                status=outcome,
                **{f"{outcome.value}_at": now},
                **{name: row.id if row is not None else None for name, row in files.items()},
                request_completed=run.results.completed,
                request_failed=run.results.failed,
                **released(),
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

    async def _enter_finalizing(self, run: BatchRun) -> BatchStatus:
        """``in_progress`` → ``finalizing``; a cancel that arrived first makes the outcome ``cancelled``."""
        async with self._database.session() as session:
            entered = await queries.update_held(
                session,
                run.batch.id,
                self._owner,
                BatchStatus.IN_PROGRESS,
                status=BatchStatus.FINALIZING,
                finalizing_at=int(time.time()),
            )
            await session.commit()
        status = BatchStatus.FINALIZING if entered else await self.status(run)  # resumed in finalizing, or not
        return BatchStatus.CANCELLED if status is BatchStatus.CANCELLING else BatchStatus.COMPLETED
