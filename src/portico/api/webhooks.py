"""GET /v1/webhooks/secret: the project's webhook signing secret (made on first use)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from portico.api.deps import PrincipalDep, WebhooksDep, require_scope
from portico.api.rendering import error_responses, json_response
from portico.constants import Scope
from portico.schemas.jobs import WebhookSecret

router = APIRouter(tags=["webhooks"], dependencies=[require_scope(Scope.JOBS_READ)])


@router.get("/v1/webhooks/secret", response_model=WebhookSecret, responses=error_responses(401, 403))
async def get_webhook_secret(principal: PrincipalDep, webhooks: WebhooksDep) -> Response:
    """The `whsec_...` secret this project's webhooks are signed with (Standard Webhooks)."""
    return json_response(WebhookSecret(secret=await webhooks.secret(principal.project_id)))
