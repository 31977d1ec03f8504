"""POST /v1/moderations: safety scores for texts, in OpenAI's shape (docs/safety.md)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.deps import PipelineDep, PrincipalDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.rendering import error_responses, generated_response
from portico.constants import Scope
from portico.schemas.moderations import ModerationRequest, ModerationResponse
from portico.services.generation.types import ENDPOINT_MODERATIONS

router = APIRouter(tags=["moderations"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])


@router.post(
    ENDPOINT_MODERATIONS,
    response_model=ModerationResponse,
    responses=error_responses(400, 401, 403, 404, 413, 415, 429, 500, 503),
)
async def create_moderation(
    body: ModerationRequest, request: Request, pipeline: PipelineDep, principal: PrincipalDep
) -> Response:
    """Each input's `flagged`, `categories` and `category_scores`; flagged at the thresholds of the caller's
    content policy (0.5 without one). Portico's classifier also scores `prompt_injection`."""
    generated = await cancel_on_disconnect(request, pipeline.moderate(body, principal))
    return generated_response(generated)
