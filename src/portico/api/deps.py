"""Named dependencies. The lifespan puts resources on ``app.state``; routes receive them through these."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from portico.engines.registry import ModelRegistry
from portico.errors import UnsupportedMediaType
from portico.services.embeddings import EmbeddingService
from portico.services.inference import InferenceService
from portico.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def get_inference(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.inference
    return service


def get_embeddings(request: Request) -> EmbeddingService:
    service: EmbeddingService = request.app.state.embeddings
    return service


def require_json(request: Request) -> None:
    """JSON endpoints accept ``application/json`` (or ``+json``); a body without a Content-Type is read as JSON."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json")):
        return
    raise UnsupportedMediaType(
        f"Content-Type '{media_type}' is not supported here. Send the body as JSON with Content-Type: application/json."
    )


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
InferenceDep = Annotated[InferenceService, Depends(get_inference)]
EmbeddingsDep = Annotated[EmbeddingService, Depends(get_embeddings)]
