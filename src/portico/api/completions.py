"""POST /v1/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.caching import CacheModeDep, SemanticCacheDep
from portico.api.deps import PipelineDep, PrincipalDep, SettingsDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.rendering import GENERATION_ERRORS, STREAM_DOC, generated_response, generation_stream
from portico.constants import Scope
from portico.schemas.completions import Completion, CompletionRequest
from portico.services.generation.types import ENDPOINT_COMPLETIONS, Call

router = APIRouter(tags=["completions"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])


@router.post(
    ENDPOINT_COMPLETIONS,
    response_model=Completion,
    responses={**GENERATION_ERRORS, 200: {"content": STREAM_DOC}},
)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    pipeline: PipelineDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    cache: CacheModeDep,
    semantic: SemanticCacheDep,
) -> Response:
    call = Call(body, ENDPOINT_COMPLETIONS)
    if body.stream:
        return generation_stream(await pipeline.stream(call, principal), settings.heartbeat_interval_s)
    work = pipeline.complete(call, principal, cache=cache, semantic=semantic)
    return generated_response(await cancel_on_disconnect(request, work))
