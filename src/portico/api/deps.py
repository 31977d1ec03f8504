"""Named dependencies. The lifespan puts resources on ``app.state``; routes receive them through these."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Request

from portico.auth.authenticator import Authenticator
from portico.auth.principal import Principal
from portico.constants import HEADER_API_KEY, Scope
from portico.engines.registry import ModelRegistry
from portico.errors import InsufficientScope, InvalidJSON, MissingApiKey, UnsupportedMediaType
from portico.observability import tracing
from portico.services.admin import AdminService
from portico.services.batches import BatchService
from portico.services.conversations import ConversationService
from portico.services.embeddings import EmbeddingService
from portico.services.files import FileService
from portico.services.generation import GenerationService
from portico.services.inference import InferenceService
from portico.services.jobs import JobService
from portico.services.metering import Meter
from portico.services.stored_completions import StoredCompletionService
from portico.services.usage import UsageService
from portico.services.webhooks import WebhookService
from portico.settings import Settings
from portico.storage.database import Database


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_inference(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.inference
    return service


async def get_embeddings(request: Request) -> EmbeddingService:
    service: EmbeddingService = request.app.state.embeddings
    return service


async def get_meter(request: Request) -> Meter:
    meter: Meter = request.app.state.meter
    return meter


async def get_generation(request: Request) -> GenerationService:
    service: GenerationService = request.app.state.generation
    return service


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_admin(request: Request) -> AdminService:
    service: AdminService = request.app.state.admin
    return service


async def get_usage(request: Request) -> UsageService:
    service: UsageService = request.app.state.usage
    return service


async def get_files(request: Request) -> FileService:
    service: FileService = request.app.state.files
    return service


async def get_batches(request: Request) -> BatchService:
    service: BatchService = request.app.state.batches
    return service


async def get_conversations(request: Request) -> ConversationService:
    service: ConversationService = request.app.state.conversations
    return service


async def get_stored_completions(request: Request) -> StoredCompletionService:
    service: StoredCompletionService = request.app.state.stored_completions
    return service


async def get_jobs(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


async def get_webhooks(request: Request) -> WebhookService:
    service: WebhookService = request.app.state.webhooks
    return service


def _presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get(HEADER_API_KEY) or None


async def get_principal(request: Request) -> Principal:
    """The caller: from its API key, or the local principal while auth is off."""
    authenticator: Authenticator | None = request.app.state.authenticator
    if authenticator is None:
        local: Principal = request.app.state.local_principal
        return local
    token = _presented_key(request)
    if token is None:
        raise MissingApiKey()
    with tracing.span("portico.auth"):
        principal = await authenticator.authenticate(token)
    request.state.key_id = principal.key_id  # for the access log
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: Scope) -> Any:
    """A route dependency: the caller's key must hold ``scope`` (403 insufficient_scope otherwise)."""

    async def check(principal: PrincipalDep) -> None:
        if scope not in principal.scopes:
            raise InsufficientScope(scope)

    return Depends(check)


async def require_json(request: Request) -> None:
    """JSON endpoints accept ``application/json`` (or ``+json``); a body without a Content-Type is read as JSON.
    Its strings must be text: see ``_refuse_lone_surrogates``.

    (This module's dependencies are ``async def`` even where they do not await: FastAPI runs a plain ``def``
    dependency in its thread pool, a thread hop per request for an attribute lookup.)"""
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not (
            media_type.startswith("application/") and media_type.endswith("+json")
        ):
            raise UnsupportedMediaType(
                f"Content-Type '{media_type}' is not supported here. "
                "Send the body as JSON with Content-Type: application/json."
            )
    await _refuse_lone_surrogates(request)


# A JSON escape of a UTF-16 surrogate: half of a pair (an emoji, say) or a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


async def _refuse_lone_surrogates(request: Request) -> None:
    """A lone surrogate escape (``"\\ud800"``) is valid JSON but decodes to a string no tokenizer, database or
    upstream can encode: refused here as a 400 rather than failing later. Only a body with a surrogate escape
    is searched (the route has parsed it already; the parse is cached)."""
    if _SURROGATE_ESCAPE.search(await request.body()) is None:
        return
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # not JSON: a route taking a body has refused it already
        return
    if _holds_a_lone_surrogate(body):
        raise InvalidJSON(
            "The request body holds a lone surrogate escape (such as \\ud800), which is not text. Escape a "
            "character outside the Basic Multilingual Plane as a surrogate pair, or send it as UTF-8."
        )


def _holds_a_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_holds_a_lone_surrogate(key) or _holds_a_lone_surrogate(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_a_lone_surrogate(item) for item in value)
    return False


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
InferenceDep = Annotated[InferenceService, Depends(get_inference)]
EmbeddingsDep = Annotated[EmbeddingService, Depends(get_embeddings)]
MeterDep = Annotated[Meter, Depends(get_meter)]
GenerationDep = Annotated[GenerationService, Depends(get_generation)]
DatabaseDep = Annotated[Database, Depends(get_database)]
AdminDep = Annotated[AdminService, Depends(get_admin)]
UsageDep = Annotated[UsageService, Depends(get_usage)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
WebhooksDep = Annotated[WebhookService, Depends(get_webhooks)]
ConversationsDep = Annotated[ConversationService, Depends(get_conversations)]
StoredCompletionsDep = Annotated[StoredCompletionService, Depends(get_stored_completions)]
FilesDep = Annotated[FileService, Depends(get_files)]
BatchesDep = Annotated[BatchService, Depends(get_batches)]
