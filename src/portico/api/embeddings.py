"""POST /v1/embeddings."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.caching import CacheModeDep
from portico.api.deps import GenerationDep, PrincipalDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.responses import error_responses, generated_headers, json_response
from portico.constants import Scope
from portico.schemas.embeddings import EmbeddingList, EmbeddingRequest
from portico.services.generation import ENDPOINT_EMBEDDINGS

router = APIRouter(tags=["embeddings"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])


@router.post(
    ENDPOINT_EMBEDDINGS,
    response_model=EmbeddingList,
    responses=error_responses(400, 401, 403, 404, 413, 415, 429, 500, 503),
)
async def create_embeddings(
    body: EmbeddingRequest, request: Request, generation: GenerationDep, principal: PrincipalDep, cache: CacheModeDep
) -> Response:
    generated = await cancel_on_disconnect(request, generation.embedding(body, principal, cache=cache))
    return json_response(generated.body, headers=generated_headers(generated))
