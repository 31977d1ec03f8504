"""What serves requests and runs background work, built once from settings: the control plane, the engines
and the services over them. ``create_app``'s lifespan and ``portico worker`` both open one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from portico.cache import build_cache_backend
from portico.engines.registry import ModelRegistry
from portico.jobs.context import WorkerContext
from portico.services.cache import ResponseCache
from portico.services.control_plane import ControlPlane
from portico.services.embeddings import EmbeddingService
from portico.services.generation import GenerationService
from portico.services.inference import InferenceService
from portico.services.semantic_cache import build_semantic_cache
from portico.services.upstream import UpstreamService
from portico.settings import Settings


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    control: ControlPlane
    registry: ModelRegistry  # not started: ``start`` loads the models
    inference: InferenceService
    embeddings: EmbeddingService
    generation: GenerationService
    # Set when a shutdown begins, before the requests in flight have finished (``portico serve`` sets it on
    # SIGTERM): streams end, running jobs go back to the queue and /readyz answers 503 from then on.
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        control = await ControlPlane.open(settings)
        registry = ModelRegistry(settings.models, settings.queue)
        inference = InferenceService(registry, settings)
        embeddings = EmbeddingService(registry)
        cache = (
            ResponseCache(build_cache_backend(settings), ttl_s=settings.cache.ttl_s) if settings.cache.enabled else None
        )
        generation = GenerationService(
            registry,
            inference,
            embeddings,
            UpstreamService(control.meter),
            control.meter,
            background_timeout_s=settings.jobs.timeout_s,
            cache=cache,
            semantic_cache=build_semantic_cache(settings, registry),
        )
        return cls(settings, control, registry, inference, embeddings, generation)

    async def start(self) -> None:
        await self.registry.start()

    def worker_context(self) -> WorkerContext:
        return WorkerContext(self.settings, self.control.database, self.control, self.generation)

    async def close(self) -> None:
        """The engines first (their generations settle), then the control plane (usage flushed)."""
        await self.registry.close()
        if self.generation.cache is not None:
            await self.generation.cache.close()
        if self.generation.semantic_cache is not None:
            await self.generation.semantic_cache.close()
        await self.control.close()
