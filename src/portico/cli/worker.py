"""``portico worker``: run jobs (and webhooks) in a process of their own, next to any number of servers."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from portico.cli.common import ConfigOption, console, load_settings
from portico.jobs.host import run_worker
from portico.observability.logging import configure_logging


def worker(
    config: ConfigOption = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Jobs run at once (default: jobs.concurrency, 8).")
    ] = None,
) -> None:
    """Run queued jobs and batches and deliver webhooks from the shared database until SIGTERM or Ctrl-C.

    Give it the servers' settings (database, models, auth). Servers may then run without their own worker:
    PORTICO_JOBS__IN_PROCESS_WORKER=false.
    """
    settings = load_settings(config)
    if concurrency is not None:
        settings = settings.model_copy(update={"jobs": settings.jobs.model_copy(update={"concurrency": concurrency})})
    configure_logging(settings.log_level)
    console.print(f"Portico worker for {', '.join(m.alias for m in settings.models)} (Ctrl-C stops it)")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_worker(settings, stop)

    asyncio.run(main())
