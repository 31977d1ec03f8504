"""A job while a worker runs it (``JobRun``), and its row as that worker writes it (``JobRow``): the text made so far
as batched delta events, then the terminal state with its usage records, event and webhook, or the job handed
back to the queue. Every write is conditional on the worker's lease on the job (``storage.jobs.update_owned``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from portico.constants import JobEventType, JobStatus
from portico.errors import PorticoError, StorageUnavailable
from portico.jobs.context import WorkerContext
from portico.jobs.leases import Leases, Warn, backoff_s, released
from portico.services.generation.pipeline import Generated
from portico.services.jobs import announce, encode_partial, finished_values
from portico.storage import jobs as store
from portico.storage.resources import Job
from portico.storage.usage import insert_usage
from portico.usage.meter import Ticket
from portico.usage.recorder import usage_values

logger = logging.getLogger("portico.jobs")

# Deltas are written as one event at most this often, or as soon as this many pieces of text wait.
DELTA_INTERVAL_S = 0.1
DELTA_MAX_PIECES = 64


class Stop(StrEnum):
    CANCEL = "cancel"  # its owner cancelled it: finish as cancelled, bill what was used
    LOST = "lost"  # another worker owns it now: write nothing
    HANDBACK = "handback"  # this worker is stopping: back to the queue


@dataclass(slots=True)
class JobRun:
    job: Job
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None  # the whole run
    generation: asyncio.Task[Generated] | None = None  # what a stop cancels
    stop: Stop | None = None
    ticket: Ticket | None = None
    texts: dict[int, list[str]] = field(default_factory=dict)  # all text so far, per choice
    pending: dict[int, list[str]] = field(default_factory=dict)  # not yet written as a delta event
    pieces: int = 0
    streaming: bool = True
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def on_delta(self, index: int, text: str) -> None:
        self.texts.setdefault(index, []).append(text)
        self.pending.setdefault(index, []).append(text)
        self.pieces += 1
        if sum(len(parts) for parts in self.pending.values()) >= DELTA_MAX_PIECES:
            self.wake.set()

    def on_admit(self, ticket: Ticket) -> None:
        self.ticket = ticket

    def request_stop(self, reason: Stop) -> None:
        """Stop the generation (the engine stops at its next step); the run then ends as ``reason`` says."""
        if self.stop is not None or (self.generation is not None and self.generation.done()):
            return
        self.stop = reason
        if self.generation is not None:
            self.generation.cancel()

    def partial_output(self) -> list[str]:
        return ["".join(self.texts.get(index, [])) for index in range(max(self.texts, default=-1) + 1)]


class JobRow:
    """The job runner's writes to the rows (and events) of the jobs it holds."""

    def __init__(self, context: WorkerContext, leases: Leases, warn: Warn) -> None:
        self._database = context.database
        self._settings = context.settings.jobs
        self._recorder = context.control.meter.recorder
        self._leases = leases
        self._owner = leases.owner
        self._warn = warn

    async def finish(
        self,
        run: JobRun,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """The terminal state, its event and its webhook in one transaction, only while holding the lease."""
        now = time.time()
        values = finished_values(status, now, self._settings, result=result, usage=usage, error=error)
        running_s = time.monotonic() - run.started

        async def write() -> bool:
            usage_rows = self._recorder.held(run.job.id)
            async with self._database.session() as session:
                if not await store.update_owned(session, run.job.id, self._owner, values):
                    return False
                await insert_usage(session, usage_values(usage_rows))
                announce(session, run.job, values, now, running_s)
                await session.commit()
            self._recorder.forget(run.job.id, usage_rows)
            return True

        if not await self._leases.write(write, warn=self._warn):
            logger.warning(
                "job finished after its lease was lost; the result is dropped",
                extra={"job_id": run.job.id, "status": status.value},
            )

    async def hand_back(self, run: JobRun, *, reason: str, refusal: PorticoError | None = None) -> None:
        """Back to the queue, as if this attempt never started (another worker, or this one later, runs it); after
        a ``refusal``, not claimed again before its backoff has passed."""

        async def write() -> bool:
            async with self._database.session() as session:
                hold_s = 0.0
                if refusal is not None:
                    failures = await store.times_queued(session, run.job.id)  # 1 for the first refusal
                    hold_s = backoff_s(failures, retry_after=refusal.retry_after)
                now = time.time()
                values = {
                    "status": JobStatus.QUEUED.value,
                    **released(hold_until=now + hold_s if hold_s else None),  # queued jobs are not claimed before
                    "attempts": run.job.attempts - 1,
                    "started_at": None,
                    "progress_tokens": 0,
                    "partial_output": None,
                }
                if not await store.update_owned(session, run.job.id, self._owner, values):
                    return False
                queued = {
                    "job_id": run.job.id,
                    "status": JobStatus.QUEUED.value,
                    "reason": reason,
                    "retry_after": hold_s,
                }
                store.add_event(session, run.job.id, JobEventType.QUEUED, queued)
                await session.commit()
            return True

        await self._leases.write(write, warn=self._warn)

    async def stream_progress(self, run: JobRun) -> None:
        """Write the text made so far as one delta event per interval (not one per token)."""
        while run.streaming:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.wake.wait(), DELTA_INTERVAL_S)
            run.wake.clear()
            await self._write_deltas(run)

    async def end_progress(self, run: JobRun, progress: asyncio.Task[None]) -> None:
        """Stop the delta writer without interrupting a write, then write what is left."""
        run.streaming = False
        run.wake.set()
        await progress
        await self._write_deltas(run)

    async def _write_deltas(self, run: JobRun) -> None:
        if not run.pending:
            return
        pending, run.pending = run.pending, {}
        choices = [{"index": index, "text": "".join(parts)} for index, parts in sorted(pending.items())]
        values = {"progress_tokens": run.pieces, "partial_output": encode_partial(run.partial_output())}
        delta = {"job_id": run.job.id, "choices": choices, "progress": {"completion_tokens": run.pieces}}
        try:
            async with self._database.session() as session:
                if not await store.update_owned(session, run.job.id, self._owner, values):
                    run.request_stop(Stop.LOST)
                    return
                store.add_event(session, run.job.id, JobEventType.DELTA, delta)
                await session.commit()
        except StorageUnavailable as exc:
            for index, parts in run.pending.items():  # keep the order: what failed, then what came since
                pending.setdefault(index, []).extend(parts)
            run.pending = pending
            self._warn("could not write a job's progress", exc)
