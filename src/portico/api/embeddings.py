"""POST /v1/embeddings."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.caching import CacheModeDep
from portico.api.deps import PipelineDep, PrincipalDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.rendering import error_responses, generated_response
from portico.constants import Scope
from portico.schemas.embeddings import EmbeddingList, EmbeddingRequest
from portico.services.generation.types import ENDPOINT_EMBEDDINGS

router = APIRouter(tags=["embeddings"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])


@router.post(
    ENDPOINT_EMBEDDINGS,
    response_model=EmbeddingList,
    responses=error_responses(400, 401, 403, 404, 413, 415, 429, 500, 503),
)
async def create_embeddings(
    body: EmbeddingRequest, request: Request, pipeline: PipelineDep, principal: PrincipalDep, cache: CacheModeDep
) -> Response:
    generated = await cancel_on_disconnect(request, pipeline.embed(body, principal, cache=cache))
    return generated_response(generated)
