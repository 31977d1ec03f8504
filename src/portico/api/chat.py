"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.caching import CacheModeDep, SemanticCacheDep
from portico.api.deps import PipelineDep, PrincipalDep, SettingsDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.rendering import GENERATION_ERRORS, STREAM_DOC, generated_response, generation_stream
from portico.constants import Scope
from portico.errors import TooManyMessages
from portico.schemas.chat import ChatCompletion, ChatCompletionRequest
from portico.services.generation.types import ENDPOINT_CHAT, Call

router = APIRouter(tags=["chat"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])


@router.post(
    ENDPOINT_CHAT,
    response_model=ChatCompletion,
    responses={**GENERATION_ERRORS, 200: {"content": STREAM_DOC}},
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    pipeline: PipelineDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    cache: CacheModeDep,
    semantic: SemanticCacheDep,
) -> Response:
    if len(body.messages) > settings.max_messages:
        raise TooManyMessages(len(body.messages), settings.max_messages)
    call = Call(body, ENDPOINT_CHAT)
    if body.stream:
        return generation_stream(await pipeline.stream(call, principal), settings.heartbeat_interval_s)
    work = pipeline.complete(call, principal, cache=cache, semantic=semantic)
    return generated_response(await cancel_on_disconnect(request, work))
