"""What serves requests and runs background work, built once from settings: the control plane, the engines
and every service over them. ``create_app``'s lifespan and ``portico worker`` both open one and only hold it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from portico.cache import build_cache_backend
from portico.engines.registry import ModelRegistry
from portico.jobs.context import WorkerContext
from portico.services.batches import BatchService
from portico.services.cache import ResponseCache
from portico.services.control_plane import ControlPlane
from portico.services.conversations import ConversationService
from portico.services.files import FileService
from portico.services.generation.fallback import BackendOptions
from portico.services.generation.pipeline import Pipeline
from portico.services.idempotency import IdempotencyService
from portico.services.jobs import JobService
from portico.services.responses import ResponseService
from portico.services.semantic_cache import build_semantic_cache
from portico.services.stored_completions import StoredCompletionService
from portico.services.webhooks import WebhookService
from portico.settings import Settings
from portico.storage.files import FileStore


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    control: ControlPlane  # database, admin, authenticator, local principal, meter, usage
    registry: ModelRegistry  # not started: ``start`` loads the models
    pipeline: Pipeline
    stored_completions: StoredCompletionService
    conversations: ConversationService
    jobs: JobService
    responses: ResponseService
    webhooks: WebhookService
    idempotency: IdempotencyService
    files: FileService
    batches: BatchService
    # Set when a shutdown begins, before the requests in flight have finished (``portico serve`` sets it on
    # SIGTERM): streams end, running jobs go back to the queue and /readyz answers 503 from then on.
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        control = await ControlPlane.open(settings)
        database = control.database
        registry = ModelRegistry(settings.models, settings.queue)
        cache = (
            ResponseCache(build_cache_backend(settings), ttl_s=settings.cache.ttl_s) if settings.cache.enabled else None
        )
        stored = StoredCompletionService(database, registry)
        pipeline = Pipeline(
            registry,
            control.meter,
            stored,
            BackendOptions(timeout_s=settings.request_timeout_s, max_n=settings.max_n),
            background_timeout_s=settings.jobs.timeout_s,
            cache=cache,
            semantic_cache=build_semantic_cache(settings, registry),
        )
        jobs = JobService(database, pipeline, settings.jobs)
        return cls(
            settings,
            control,
            registry,
            pipeline,
            stored,
            ConversationService(database, pipeline, registry, settings),
            jobs,
            ResponseService(database, pipeline, jobs, max_messages=settings.max_messages),
            WebhookService(database),
            IdempotencyService(database, settings.idempotency),
            FileService(database, FileStore(settings.files_directory), max_bytes=settings.files.max_bytes),
            BatchService(database),
        )

    async def start(self) -> None:
        await self.registry.start()

    def worker_context(self) -> WorkerContext:
        return WorkerContext(self.settings, self.control.database, self.control, self.pipeline)

    async def close(self) -> None:
        """Partial conversation answers still being stored, then the engines (their generations settle), then
        the control plane (usage flushed)."""
        await self.conversations.close()
        await self.registry.close()
        if self.pipeline.cache is not None:
            await self.pipeline.cache.close()
        if self.pipeline.semantic_cache is not None:
            await self.pipeline.semantic_cache.close()
        await self.control.close()
