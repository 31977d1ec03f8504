"""Response helpers shared by routes: fast JSON bodies and the OpenAPI description of errors and streams."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from portico.schemas.common import PromptTokensDetails, Usage
from portico.schemas.errors import ErrorEnvelope
from portico.services import inference


def json_response(body: BaseModel, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body.model_dump_json(), status_code=status_code, headers=headers, media_type="application/json")


def wire_usage(usage: inference.Usage) -> Usage:
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorEnvelope} for status in statuses}


GENERATION_ERRORS = error_responses(400, 404, 413, 415, 500, 503, 504)

STREAM_DOC: dict[str, Any] = {
    "text/event-stream": {
        "schema": {"type": "string"},
        "description": "With `stream: true`: `data: {chunk}` events, `: heartbeat` comments, then "
        '`data: [DONE]` on success or one `data: {"error": ...}` event on failure.',
    }
}
