"""The job runner: claims jobs under a lease, runs each through the generation pipeline, writes its progress as
batched delta events, and finishes it, every write conditional on still holding the lease.

The lease rules are ``jobs/leases.py``'s, shared with the batch runner. A worker that dies stops renewing its
leases; once one lapses another worker claims the job and runs it from the start (``attempts`` + 1; past
``jobs.max_attempts`` the job fails with ``worker_lost``). A worker that lost a lease (it was paused, or cut off
from the database) can no longer write anything to that job, so a job is never finished twice. One heartbeat per
runner renews the leases of all its jobs and notices cancellations. A run turned away for a transient reason
(``leases.is_transient``) before it made any text goes back to the queue until its backoff has passed.

A run's usage records are written in the transaction that finishes its job, not by the usage recorder's timer:
a worker killed between the two would otherwise lose them (the job stays finished) or write them for an
attempt that then runs again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from portico.constants import JobEventType, JobStatus, Priority
from portico.errors import PorticoError, WorkerLost
from portico.jobs.context import WorkerContext
from portico.jobs.job_row import JobRow, JobRun, Stop
from portico.jobs.leases import Leases, is_transient, stopped_within
from portico.observability.logging import request_id_var
from portico.services.generation.pipeline import Generated
from portico.services.jobs import ENDPOINTS, announce, finished_values, settled_usage
from portico.storage import jobs as store
from portico.storage.resources import Job

logger = logging.getLogger("portico.jobs")

# On close, running jobs get this long to finish; the rest are handed back to the queue.
DRAIN_S = 5.0
# How often finished jobs past their retention are erased (GET shows them expired in between).
SWEEP_INTERVAL_S = 60.0
_WARN_EVERY_S = 10.0


class JobRunner:
    def __init__(self, context: WorkerContext, *, drain_s: float = DRAIN_S) -> None:
        self._context = context
        self._settings = context.settings.jobs
        self._owner = context.owner
        self._leases = Leases(context.database, context.owner, self._settings.lease_s)
        self._row = JobRow(context, self._leases, self._warn)
        self._recorder = context.control.meter.recorder
        self._drain_s = drain_s
        self._runs: dict[str, JobRun] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        # Loops stop between two steps, never inside one: a cancelled query may leave its connection unusable.
        self._stopping = asyncio.Event()
        self._unwatched = asyncio.Event()
        self._warned_at = 0.0

    async def start(self) -> None:
        claiming = self._leases.claim_loop(
            self._claim,
            lambda: self._settings.concurrency - len(self._runs),
            poll_s=self._settings.poll_interval_s,
            stop=self._stopping,
            warn=self._warn,
            wake=self._wake,
        )
        heartbeat = self._leases.keep(
            self._beat, check_every_s=self._settings.poll_interval_s, warn=self._warn, stop=self._unwatched
        )
        self._loops = [
            asyncio.create_task(claiming, name="jobs-claim"),
            asyncio.create_task(self._sweep_loop(), name="jobs-sweep"),
            asyncio.create_task(heartbeat, name="jobs-heartbeat"),  # last: it runs until the drain ends
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
    async def _claim(self, limit: int) -> int:
        """Claim up to ``limit`` jobs and start running them; how many. Cancelled jobs and jobs whose workers
        died ``max_attempts`` times are settled instead."""
        values: dict[str, dict[str, Any]] = {}

        async def take(session: AsyncSession, job: Job, now: float) -> bool:
            lapsed_for_good = job.status == JobStatus.RUNNING and job.attempts >= self._settings.max_attempts
            if job.cancel_requested or lapsed_for_good:
                status = JobStatus.CANCELLED if job.cancel_requested else JobStatus.FAILED
                error = None if job.cancel_requested else self._worker_lost(job).envelope(job.id)
                settled = finished_values(status, now, self._settings, error=error)
                if await store.take_job(session, job, now, settled):
                    announce(session, job, settled, now, running_s=0.0)
                return False
            values[job.id] = {
                "status": JobStatus.RUNNING.value,
                "lease_owner": self._owner,
                "lease_expires_at": self._leases.until(now),
                "attempts": job.attempts + 1,
                "started_at": int(now),
                "progress_tokens": 0,
                "partial_output": None,
            }
            if not await store.take_job(session, job, now, values[job.id]):
                return False
            started = {"job_id": job.id, "attempt": job.attempts + 1, "started_at": int(now)}
            store.add_event(session, job.id, JobEventType.STARTED, started)
            return True

        jobs = await self._leases.claim(store.claimable_jobs, take, limit=limit, held=self._runs)
        for job in jobs:  # detached now: setting attributes writes nothing
            for name, value in values[job.id].items():
                setattr(job, name, value)
            self._launch(job)
        return len(jobs)

    def _worker_lost(self, job: Job) -> WorkerLost:
        return WorkerLost(
            f"The job's worker stopped (it died or lost the database) on each of its {job.attempts} attempts, "
            "so it was given up. Submit it again; if this repeats, check the workers' logs."
        )

    def _launch(self, job: Job) -> None:
        run = JobRun(job)
        self._runs[job.id] = run
        run.task = asyncio.create_task(self._run(run), name=f"job-{job.id}")

    # -- running -------------------------------------------------------------------------------------------
    async def _run(self, run: JobRun) -> None:
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

    async def _execute(self, run: JobRun) -> None:
        run.generation = asyncio.create_task(self._generate(run))
        if run.stop is not None:
            run.generation.cancel()
        progress = asyncio.create_task(self._row.stream_progress(run))
        try:
            generated = await run.generation
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if run.stop is None or (current is not None and current.cancelling()):
                raise  # this runner itself is being cancelled
            await self._row.end_progress(run, progress)
            await self._stopped(run)
            return
        except PorticoError as exc:
            await self._row.end_progress(run, progress)
            await self._refused_or_failed(run, exc)
            return
        except Exception:
            logger.exception("job failed unexpectedly", extra={"job_id": run.job.id})
            await self._row.end_progress(run, progress)
            await self._failed(run, PorticoError("The job failed with an unexpected server error. Submit it again."))
            return
        await self._row.end_progress(run, progress)
        result = generated.body.model_dump(mode="json")
        await self._row.finish(run, JobStatus.SUCCEEDED, result=result, usage=result.get("usage"))

    async def _generate(self, run: JobRun) -> Generated:
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

    async def _stopped(self, run: JobRun) -> None:
        if run.stop is Stop.CANCEL:
            await self._row.finish(run, JobStatus.CANCELLED, usage=settled_usage(run.ticket))
        elif run.stop is Stop.HANDBACK:
            await self._row.hand_back(run, reason="worker_stopping")
        else:
            logger.warning(
                "job lease lost to another worker; this attempt's output is dropped", extra={"job_id": run.job.id}
            )

    async def _refused_or_failed(self, run: JobRun, exc: PorticoError) -> None:
        if is_transient(exc) and run.pieces == 0:  # text already sent as events is not taken back
            await self._row.hand_back(run, reason=exc.code, refusal=exc)
        else:
            await self._failed(run, exc)

    async def _failed(self, run: JobRun, exc: PorticoError) -> None:
        error = exc.envelope(run.job.id)
        await self._row.finish(run, JobStatus.FAILED, error=error, usage=settled_usage(run.ticket))

    # -- leases, cancellation, retention -------------------------------------------------------------------
    async def _beat(self, renew: bool) -> None:
        """Renew the leases of every running job (when ``renew``); stop the runs whose job is cancelled or lost."""
        runs = dict(self._runs)
        if not runs:
            return
        async with self._context.database.session() as session:
            if renew:
                await store.renew_leases(session, runs.keys(), self._owner, self._leases.until(time.time()))
                await session.commit()
            owned, cancelled = await store.watched(session, runs.keys(), self._owner)
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
            if await stopped_within(self._stopping, min(SWEEP_INTERVAL_S, self._settings.retention_s)):
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
