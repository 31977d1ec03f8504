"""The application factory. Nothing happens at import time; the lifespan opens and closes resources."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware

from portico import __version__
from portico.api import (
    admin,
    admin_keys,
    anthropic,
    batches,
    chat,
    completions,
    conversations,
    embeddings,
    files,
    health,
    jobs,
    metrics,
    models,
    moderations,
    playground,
    projects,
    responses,
    stored_completions,
    tokenize,
    usage,
    webhooks,
)
from portico.api.errors import install_error_handlers
from portico.api.idempotency import IdempotencyMiddleware
from portico.api.middleware import BodyLimitMiddleware, ModelVersionMiddleware, RequestContextMiddleware
from portico.api.rendering import ERROR_RANGES
from portico.api.streaming import OpenStreams, StreamSlots
from portico.api.uploads import MULTIPART_OVERHEAD_BYTES
from portico.constants import GZIP_LEVEL, GZIP_MINIMUM_BYTES
from portico.jobs.host import WorkerHost
from portico.observability import tracing
from portico.observability.logging import stamp_request_ids
from portico.observability.metrics import process_exiting
from portico.runtime import Runtime
from portico.settings import Settings

logger = logging.getLogger("portico")

# The lifespan state key of ``Runtime.shutting_down``: how ``portico serve``'s server announces a shutdown.
SHUTDOWN_STATE = "portico.shutting_down"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    stamp_request_ids()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, asyncio.Event]]:
        tracing.configure_tracing(settings.tracing.enabled)
        runtime = await Runtime.open(settings)
        app.state.runtime = runtime
        worker = WorkerHost.in_process(runtime.worker_context())
        await runtime.start()
        await worker.start()  # after the engines: it may claim a job or a batch at once
        logger.info("ready", extra={"models": [served.alias for served in runtime.registry]})
        stopping = asyncio.create_task(_stop_background_work(runtime.shutting_down, app.state.open_streams, worker))
        try:
            yield {SHUTDOWN_STATE: runtime.shutting_down}
        finally:
            runtime.shutting_down.set()  # already set if the server announced the shutdown
            await stopping  # before the engines stop
            await runtime.close()
            tracing.shutdown_tracing()
            process_exiting()

    app = FastAPI(
        title="Portico",
        version=__version__,
        summary="An OpenAI-compatible AI API server with the production patterns built in.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.stream_slots = StreamSlots(settings.max_streams_per_key)
    app.state.open_streams = OpenStreams()
    install_error_handlers(app)
    for router in (
        chat.router,
        responses.router,
        anthropic.router,
        stored_completions.router,
        conversations.router,
        completions.router,
        embeddings.router,
        moderations.router,
        models.router,
        tokenize.router,
        usage.router,
        admin.router,
        admin_keys.router,
        projects.router,
        files.router,
        batches.router,
        health.router,
        jobs.router,
        webhooks.router,
        playground.router,
    ):
        app.include_router(router, responses=ERROR_RANGES)
    if settings.metrics.enabled:
        app.include_router(metrics.router, responses=ERROR_RANGES)

    # Middleware, outermost first (add_middleware prepends, hence the reverse order below):
    #   1. RequestContextMiddleware: request id, X-Processing-Ms, access log, clean 500s.
    #   2. GZipMiddleware: bodies of GZIP_MINIMUM_BYTES or more are gzip-compressed when the client accepts it;
    #      text/event-stream passes through untouched and unbuffered (Starlette excludes it). Outside idempotency,
    #      so a replay is compressed (or not) for the client asking now, never stored compressed.
    #   3. BodyLimitMiddleware: bodies over max_body_bytes are a 413 before any parsing; file uploads stream
    #      through unbuffered, up to files.max_bytes plus the multipart framing (the route enforces the file's own).
    #   4. IdempotencyMiddleware: a POST with an Idempotency-Key replays the stored response of its first run.
    #   5. ModelVersionMiddleware: Deprecation/Sunset/Link when the request named a deprecated model snapshot;
    #      inside idempotency, so a replay repeats them.
    app.add_middleware(ModelVersionMiddleware)
    app.add_middleware(IdempotencyMiddleware)
    upload_limit = settings.files.max_bytes + MULTIPART_OVERHEAD_BYTES
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_s,
        streamed={files.UPLOAD_PATH: upload_limit},
    )
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES, compresslevel=GZIP_LEVEL)
    app.add_middleware(RequestContextMiddleware)
    return app


async def _stop_background_work(shutting_down: asyncio.Event, streams: OpenStreams, worker: WorkerHost) -> None:
    """As soon as the shutdown begins, while requests in flight finish: end the open streams (their clients
    retry elsewhere) and close the in-process worker (running jobs and batches finish or go back to the queue)."""
    await shutting_down.wait()
    logger.info("shutting down: open streams end, running jobs finish or go back to the queue")
    streams.close()
    await worker.close()
