"""The application factory. Nothing happens at import time; the lifespan opens and closes resources."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from portico import __version__
from portico.api import admin, chat, completions, embeddings, health, models, projects, tokenize, usage
from portico.api.errors import install_error_handlers
from portico.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from portico.engines.registry import ModelRegistry
from portico.observability.logging import stamp_request_ids
from portico.services.control_plane import ControlPlane
from portico.services.embeddings import EmbeddingService
from portico.services.generation import GenerationService
from portico.services.inference import InferenceService
from portico.settings import Settings

logger = logging.getLogger("portico")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    stamp_request_ids()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        control = await ControlPlane.open(settings)
        app.state.control = control
        app.state.database = control.database
        app.state.admin = control.admin
        app.state.authenticator = control.authenticator
        app.state.local_principal = control.local_principal
        app.state.meter = control.meter
        app.state.usage = control.usage
        registry = ModelRegistry(settings.models, settings.queue)
        app.state.registry = registry
        app.state.inference = InferenceService(registry, settings)
        app.state.embeddings = EmbeddingService(registry)
        app.state.generation = GenerationService(app.state.inference, app.state.embeddings, control.meter)
        await registry.start()
        logger.info("ready", extra={"models": [served.alias for served in registry]})
        try:
            yield
        finally:
            await registry.close()
            await control.close()

    app = FastAPI(
        title="Portico",
        version=__version__,
        summary="An OpenAI-compatible AI API server with the production patterns built in.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    for router in (
        chat.router,
        completions.router,
        embeddings.router,
        models.router,
        tokenize.router,
        usage.router,
        admin.router,
        projects.router,
        health.router,
    ):
        app.include_router(router)

    # Middleware, outermost first (add_middleware prepends, hence the reverse order below):
    #   1. RequestContextMiddleware: request id, X-Processing-Ms, access log, clean 500s.
    #   2. BodyLimitMiddleware: bodies over max_body_bytes are a 413 before any parsing.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app
