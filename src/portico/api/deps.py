"""Named dependencies. The lifespan holds the ``Runtime`` on ``app.state``; routes receive its parts through these."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Request

from portico.auth.authenticator import Authenticator
from portico.auth.principal import Principal
from portico.constants import HEADER_API_KEY, HEADER_X_API_KEY, Scope
from portico.engines.registry import ModelRegistry
from portico.errors import InsufficientScope, InvalidJSON, MissingApiKey, UnsupportedMediaType
from portico.observability import tracing
from portico.runtime import Runtime
from portico.services.admin import AdminService
from portico.services.batches import BatchService
from portico.services.conversations import ConversationService
from portico.services.files import FileService
from portico.services.generation.pipeline import Pipeline
from portico.services.jobs import JobService
from portico.services.responses import ResponseService
from portico.services.stored_completions import StoredCompletionService
from portico.services.usage import UsageService
from portico.services.webhooks import WebhookService
from portico.settings import Settings
from portico.storage.database import Database


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    return _runtime(request)


async def get_registry(request: Request) -> ModelRegistry:
    return _runtime(request).registry


async def get_pipeline(request: Request) -> Pipeline:
    return _runtime(request).pipeline


async def get_database(request: Request) -> Database:
    return _runtime(request).control.database


async def get_admin(request: Request) -> AdminService:
    return _runtime(request).control.admin


async def get_usage(request: Request) -> UsageService:
    return _runtime(request).control.usage


async def get_files(request: Request) -> FileService:
    return _runtime(request).files


async def get_batches(request: Request) -> BatchService:
    return _runtime(request).batches


async def get_conversations(request: Request) -> ConversationService:
    return _runtime(request).conversations


async def get_stored_completions(request: Request) -> StoredCompletionService:
    return _runtime(request).stored_completions


async def get_responses(request: Request) -> ResponseService:
    return _runtime(request).responses


async def get_jobs(request: Request) -> JobService:
    return _runtime(request).jobs


async def get_webhooks(request: Request) -> WebhookService:
    return _runtime(request).webhooks


def _presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get(HEADER_API_KEY) or request.headers.get(HEADER_X_API_KEY) or None


async def get_principal(request: Request) -> Principal:
    """The caller: from its API key, or the local principal while auth is off."""
    control = _runtime(request).control
    authenticator: Authenticator | None = control.authenticator
    if authenticator is None:
        local: Principal = control.local_principal
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
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
DatabaseDep = Annotated[Database, Depends(get_database)]
AdminDep = Annotated[AdminService, Depends(get_admin)]
UsageDep = Annotated[UsageService, Depends(get_usage)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
WebhooksDep = Annotated[WebhookService, Depends(get_webhooks)]
ConversationsDep = Annotated[ConversationService, Depends(get_conversations)]
StoredCompletionsDep = Annotated[StoredCompletionService, Depends(get_stored_completions)]
ResponsesDep = Annotated[ResponseService, Depends(get_responses)]
FilesDep = Annotated[FileService, Depends(get_files)]
BatchesDep = Annotated[BatchService, Depends(get_batches)]
