"""POST /v1/tokenize: count tokens (chat template applied for messages) to pre-check a request's length."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from portico.api.deps import InferenceDep, require_json
from portico.api.responses import error_responses, json_response
from portico.schemas.tokenize import TokenizeRequest, TokenizeResponse

router = APIRouter(tags=["tokenize"], dependencies=[Depends(require_json)])


@router.post("/v1/tokenize", response_model=TokenizeResponse, responses=error_responses(400, 404, 413, 415))
async def tokenize(body: TokenizeRequest, service: InferenceDep) -> Response:
    served, count = await service.count_tokens(body)
    return json_response(
        TokenizeResponse(model=served.snapshot, count=count, max_model_len=served.engine.context_window)
    )
