"""POST /v1/tokenize: count tokens (chat template applied for messages) to pre-check a request's length."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from portico.api.deps import PipelineDep, require_json, require_scope
from portico.api.rendering import error_responses, json_response
from portico.constants import Scope
from portico.schemas.tokenize import TokenizeRequest, TokenizeResponse

# Counting tokens generates nothing: it needs the inference scope but is neither limited nor billed.
router = APIRouter(tags=["tokenize"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])


@router.post("/v1/tokenize", response_model=TokenizeResponse, responses=error_responses(400, 401, 403, 404, 413, 415))
async def tokenize(body: TokenizeRequest, pipeline: PipelineDep) -> Response:
    served, count = await pipeline.count_tokens(body)
    return json_response(
        TokenizeResponse(model=served.snapshot, count=count, max_model_len=served.engine.context_window)
    )
