"""The job runner: claims jobs under a lease, runs each through the generation pipeline, writes its progress as
batched delta events, and finishes it, every write conditional on still holding the lease.

A worker that dies stops renewing its leases; once one lapses another worker claims the job and runs it from
the start (``attempts`` + 1; past ``jobs.max_attempts`` the job fails with ``worker_lost``). A worker that lost a
lease (it was paused, or cut off from the database) can no longer write anything to that job, so a job is never
finished twice. One watch loop per runner renews the leases of all its jobs and notices cancellations.

A run's usage records are written in the transaction that finishes its job, not by the usage recorder's timer:
a worker killed between the two would otherwise lose them (the job stays finished) or write them for an
attempt that then runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from portico.constants import JobEventType, JobStatus, Priority
from portico.errors import EngineOverloaded, PorticoError, RateLimited, StorageUnavailable, WorkerLost
from portico.jobs.context import WorkerContext
from portico.observability.logging import request_id_var
from portico.services.generation.pipeline import Generated
from portico.services.jobs import (
    ENDPOINTS,
    announce,
    encode_partial,
    finished_values,
    settled_usage,
)
from portico.storage import jobs as store
from portico.storage.resources import Job
from portico.storage.usage import insert_usage
from portico.usage.meter import Ticket
from portico.usage.recorder import usage_values

logger = logging.getLogger("portico.jobs")

# Deltas are written as one event at most this often, or as soon as this many pieces of text wait.
DELTA_INTERVAL_S = 0.1
DELTA_MAX_PIECES = 64
# On close, running jobs get this long to finish; the rest are handed back to the queue.
DRAIN_S = 5.0
# How often finished jobs past their retention are erased (GET shows them expired in between).
SWEEP_INTERVAL_S = 60.0
# A job whose run was refused for a passing reason (a rate limit, a full engine queue) waits this long at most.
MAX_HOLD_BACK_S = 60.0
_WRITE_RETRY_S = 0.5
_WARN_EVERY_S = 10.0


class Stop(StrEnum):
    CANCEL = "cancel"  # its owner cancelled it: finish as cancelled, bill what was used
    LOST = "lost"  # another worker owns it now: write nothing
    HANDBACK = "handback"  # this worker is stopping: back to the queue


@dataclass(slots=True)
class _Run:
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


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True as soon as ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def _hold_back_s(exc: PorticoError) -> float | None:
    """How long to put a job back in the queue for, when its run was refused for a reason that passes."""
    if isinstance(exc, RateLimited | EngineOverloaded) and exc.retryable:
        return min(MAX_HOLD_BACK_S, max(exc.retry_after or 1.0, 0.1))
    return None


class JobRunner:
    def __init__(self, context: WorkerContext, *, drain_s: float = DRAIN_S) -> None:
        self._context = context
        self._settings = context.settings.jobs
        self._owner = context.owner
        self._recorder = context.control.meter.recorder
        self._drain_s = drain_s
        self._runs: dict[str, _Run] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        # Loops stop between two steps, never inside one: a cancelled query may leave its connection unusable.
        self._stopping = asyncio.Event()
        self._unwatched = asyncio.Event()
        self._warned_at = 0.0

    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="jobs-claim"),
            asyncio.create_task(self._sweep_loop(), name="jobs-sweep"),
            asyncio.create_task(self._watch_loop(), name="jobs-watch"),  # last: it runs until the drain ends
        ]
        logger.info("job runner started", extra={"owner": self._owner})

    async def close(self) -> None:
        """Stop claiming; give running jobs ``drain_s`` to finish, then hand the rest back to the queue."""
        claim, sweep, watch = self._loops
        self._stopping.set()
        self._wake.set()
        await asyncio.gather(claim, sweep, return_exceptions=True)
        running = [run.task for run in self._runs.values() if run.task is not None]
        if running:
            _, late = await asyncio.wait(running, timeout=self._drain_s)
            for run in list(self._runs.values()):
                run.request_stop(Stop.HANDBACK)
            if late:
                _, stuck = await asyncio.wait(late, timeout=self._context.settings.jobs.lease_s)
                for task in stuck:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        self._unwatched.set()
        await asyncio.gather(watch, return_exceptions=True)

    # -- claiming ------------------------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            free = self._settings.concurrency - len(self._runs)
            claimed: list[Job] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception as exc:
                    self._warn("could not claim jobs", exc)
            for job in claimed:
                self._launch(job)
            if free <= 0 or len(claimed) < free:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval_s)

    async def _claim(self, limit: int) -> list[Job]:
        now = time.time()
        taken: list[tuple[Job, dict[str, Any]]] = []
        async with self._context.database.session() as session:
            for job in await store.claimable_jobs(session, now, limit):
                if job.id in self._runs:
                    continue  # ours: its lease lapsed while the database was slow; the watch loop renews it
                lapsed_for_good = job.status == JobStatus.RUNNING and job.attempts >= self._settings.max_attempts
                if job.cancel_requested or lapsed_for_good:
                    status = JobStatus.CANCELLED if job.cancel_requested else JobStatus.FAILED
                    error = None if job.cancel_requested else self._worker_lost(job).envelope(job.id)
                    values = finished_values(status, now, self._settings, error=error)
                    if await store.take_job(session, job, now, values):
                        announce(session, job, values, now, running_s=0.0)
                    continue
                values = {
                    "status": JobStatus.RUNNING.value,
                    "lease_owner": self._owner,
                    "lease_expires_at": now + self._settings.lease_s,
                    "attempts": job.attempts + 1,
                    "started_at": int(now),
                    "progress_tokens": 0,
                    "partial_output": None,
                }
                if await store.take_job(session, job, now, values):
                    started = {"job_id": job.id, "attempt": job.attempts + 1, "started_at": int(now)}
                    store.add_event(session, job.id, JobEventType.STARTED, started)
                    taken.append((job, values))
            await session.commit()
        for job, values in taken:  # detached now: setting attributes writes nothing
            for name, value in values.items():
                setattr(job, name, value)
        return [job for job, _ in taken]

    def _worker_lost(self, job: Job) -> WorkerLost:
        return WorkerLost(
            f"The job's worker stopped (it died or lost the database) on each of its {job.attempts} attempts, "
            "so it was given up. Submit it again; if this repeats, check the workers' logs."
        )

    def _launch(self, job: Job) -> None:
        run = _Run(job)
        self._runs[job.id] = run
        run.task = asyncio.create_task(self._run(run), name=f"job-{job.id}")

    # -- running -------------------------------------------------------------------------------------------
    async def _run(self, run: _Run) -> None:
        token = request_id_var.set(run.job.id)  # the usage record's request id is the job's id
        self._recorder.hold(run.job.id)
        try:
            await self._execute(run)
        except Exception:
            logger.exception("job run failed", extra={"job_id": run.job.id})
        finally:
            self._recorder.release(run.job.id)  # an attempt that did not finish the job: recorded on its own
            request_id_var.reset(token)
            self._runs.pop(run.job.id, None)
            self._wake.set()

    async def _execute(self, run: _Run) -> None:
        run.generation = asyncio.create_task(self._generate(run))
        if run.stop is not None:
            run.generation.cancel()
        progress = asyncio.create_task(self._stream_progress(run))
        try:
            generated = await run.generation
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if run.stop is None or (current is not None and current.cancelling()):
                raise  # this runner itself is being cancelled
            await self._end_progress(run, progress)
            await self._stopped(run)
            return
        except PorticoError as exc:
            await self._end_progress(run, progress)
            await self._refused_or_failed(run, exc)
            return
        except Exception:
            logger.exception("job failed unexpectedly", extra={"job_id": run.job.id})
            await self._end_progress(run, progress)
            await self._failed(run, PorticoError("The job failed with an unexpected server error. Submit it again."))
            return
        await self._end_progress(run, progress)
        result = generated.body.model_dump(mode="json")
        await self._finish(run, JobStatus.SUCCEEDED, result=result, usage=result.get("usage"))

    async def _generate(self, run: _Run) -> Generated:
        job = run.job
        principal = await self._context.control.principal_for(job.key_id)
        return await self._context.generation.run(
            ENDPOINTS[job.type],
            job.request or {},
            principal,
            priority=Priority(job.priority),
            on_delta=run.on_delta,
            on_admit=run.on_admit,
        )

    async def _stopped(self, run: _Run) -> None:
        if run.stop is Stop.CANCEL:
            await self._finish(run, JobStatus.CANCELLED, usage=settled_usage(run.ticket))
        elif run.stop is Stop.HANDBACK:
            await self._hand_back(run, hold_s=0.0, reason="worker_stopping")
        else:
            logger.warning(
                "job lease lost to another worker; this attempt's output is dropped", extra={"job_id": run.job.id}
            )

    async def _refused_or_failed(self, run: _Run, exc: PorticoError) -> None:
        hold_s = _hold_back_s(exc)
        if hold_s is not None and run.pieces == 0:
            await self._hand_back(run, hold_s=hold_s, reason=exc.code)
        else:
            await self._failed(run, exc)

    async def _failed(self, run: _Run, exc: PorticoError) -> None:
        error = exc.envelope(run.job.id)
        await self._finish(run, JobStatus.FAILED, error=error, usage=settled_usage(run.ticket))

    # -- writing -------------------------------------------------------------------------------------------
    async def _finish(
        self,
        run: _Run,
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
            async with self._context.database.session() as session:
                if not await store.update_owned(session, run.job.id, self._owner, values):
                    return False
                await insert_usage(session, usage_values(usage_rows))
                announce(session, run.job, values, now, running_s)
                await session.commit()
            self._recorder.forget(run.job.id, usage_rows)
            return True

        if not await self._retrying(write):
            logger.warning(
                "job finished after its lease was lost; the result is dropped",
                extra={"job_id": run.job.id, "status": status.value},
            )

    async def _hand_back(self, run: _Run, *, hold_s: float, reason: str) -> None:
        """Back to the queue, as if this attempt never started (another worker, or this one later, runs it)."""
        now = time.time()
        values = {
            "status": JobStatus.QUEUED.value,
            "lease_owner": None,
            "lease_expires_at": now + hold_s if hold_s else None,  # a queued job is not claimed before this
            "attempts": run.job.attempts - 1,
            "started_at": None,
            "progress_tokens": 0,
            "partial_output": None,
        }
        queued = {"job_id": run.job.id, "status": JobStatus.QUEUED.value, "reason": reason, "retry_after": hold_s}

        async def write() -> bool:
            async with self._context.database.session() as session:
                if not await store.update_owned(session, run.job.id, self._owner, values):
                    return False
                store.add_event(session, run.job.id, JobEventType.QUEUED, queued)
                await session.commit()
            return True

        await self._retrying(write)

    async def _retrying(self, write: Callable[[], Awaitable[bool]]) -> bool:
        """Retry a write while the database is unreachable, for as long as the lease could still be ours."""
        deadline = time.monotonic() + self._settings.lease_s
        while True:
            try:
                return await write()
            except StorageUnavailable as exc:
                if time.monotonic() >= deadline:
                    self._warn("gave up writing a job's state", exc)
                    return False
                await asyncio.sleep(_WRITE_RETRY_S)

    async def _stream_progress(self, run: _Run) -> None:
        """Write the text made so far as one delta event per interval (not one per token)."""
        while run.streaming:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.wake.wait(), DELTA_INTERVAL_S)
            run.wake.clear()
            await self._write_deltas(run)

    async def _end_progress(self, run: _Run, progress: asyncio.Task[None]) -> None:
        """Stop the delta writer without interrupting a write, then write what is left."""
        run.streaming = False
        run.wake.set()
        await progress
        await self._write_deltas(run)

    async def _write_deltas(self, run: _Run) -> None:
        if not run.pending:
            return
        pending, run.pending = run.pending, {}
        choices = [{"index": index, "text": "".join(parts)} for index, parts in sorted(pending.items())]
        values = {"progress_tokens": run.pieces, "partial_output": encode_partial(run.partial_output())}
        delta = {"job_id": run.job.id, "choices": choices, "progress": {"completion_tokens": run.pieces}}
        try:
            async with self._context.database.session() as session:
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

    # -- leases, cancellation, retention -------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        renew_every = self._settings.lease_s / 3
        next_renewal = 0.0
        while not await _stopped_within(self._unwatched, min(self._settings.poll_interval_s, renew_every)):
            runs = dict(self._runs)
            if not runs:
                continue
            try:
                async with self._context.database.session() as session:
                    if time.monotonic() >= next_renewal:
                        until = time.time() + self._settings.lease_s
                        await store.renew_leases(session, runs.keys(), self._owner, until)
                        await session.commit()
                        next_renewal = time.monotonic() + renew_every
                    owned, cancelled = await store.watched(session, runs.keys(), self._owner)
            except Exception as exc:
                self._warn("could not renew job leases", exc)
                continue
            for job_id, run in runs.items():
                if job_id not in owned:
                    run.request_stop(Stop.LOST)
                elif job_id in cancelled:
                    run.request_stop(Stop.CANCEL)

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self._expire_finished()
            except Exception as exc:
                self._warn("could not expire finished jobs", exc)
            if await _stopped_within(self._stopping, min(SWEEP_INTERVAL_S, self._settings.retention_s)):
                return

    async def _expire_finished(self) -> None:
        now = int(time.time())
        batch = 100
        while True:
            async with self._context.database.session() as session:
                job_ids = await store.expirable_jobs(session, now, batch)
                for job_id in job_ids:
                    await store.expire_job(session, job_id, now)
                await session.commit()
            if len(job_ids) < batch:
                return

    def _warn(self, what: str, exc: Exception) -> None:
        if time.monotonic() - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = time.monotonic()
            logger.warning(what, exc_info=exc)
