"""The worker host: starts background runners together and closes them in reverse order.

``portico serve`` hosts them in process (``jobs.in_process_worker``); ``portico worker`` hosts them in a process of
their own, with its own engines (``run_worker``). Any number of either share the work through the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from portico.jobs.batches import BatchRunner
from portico.jobs.context import WorkerContext
from portico.jobs.runner import JobRunner
from portico.jobs.webhooks import WebhookDispatcher
from portico.runtime import Runtime
from portico.settings import Settings

logger = logging.getLogger("portico.jobs")


class Runner(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


class WorkerHost:
    def __init__(self, runners: Sequence[Runner]) -> None:
        self.runners = list(runners)
        self._started: list[Runner] = []

    @classmethod
    def for_context(cls, context: WorkerContext) -> WorkerHost:
        """The runners every worker has: the webhook outbox, jobs and batches (closed in reverse order, so the
        webhooks of the jobs finished while draining may still go out)."""
        return cls([WebhookDispatcher(context), JobRunner(context), BatchRunner(context)])

    @classmethod
    def in_process(cls, context: WorkerContext) -> WorkerHost:
        """What ``portico serve`` hosts: every runner, or none with ``jobs.in_process_worker`` off."""
        return cls.for_context(context) if context.settings.jobs.in_process_worker else cls([])

    async def start(self) -> None:
        for runner in self.runners:
            await runner.start()
            self._started.append(runner)

    async def close(self) -> None:
        """Close every started runner (the last started first), even if one of them fails to close."""
        while self._started:
            runner = self._started.pop()
            try:
                await runner.close()
            except Exception:
                logger.exception("a worker runner failed to close", extra={"runner": type(runner).__name__})


def standalone_settings(settings: Settings) -> Settings:
    """A worker binds no address, so "auth off on loopback" does not apply to it: unless auth is turned off
    explicitly, jobs made with a key run as that key (its project, limits and usage)."""
    if settings.auth.enabled is not None:
        return settings
    return settings.model_copy(update={"auth": settings.auth.model_copy(update={"enabled": True})})


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """A standalone worker: its own engines, the control plane and the runners, until ``stop`` is set."""
    runtime = await Runtime.open(standalone_settings(settings))
    try:
        await runtime.start()
        context = runtime.worker_context()
        host = WorkerHost.for_context(context)
        await host.start()
        logger.info("worker ready", extra={"owner": context.owner, "models": [m.alias for m in runtime.registry]})
        try:
            await stop.wait()
        finally:
            logger.info("worker stopping: running jobs get a moment to finish, the rest go back to the queue")
            await host.close()
    finally:
        await runtime.close()
