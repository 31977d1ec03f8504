"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API, answered by the chat pipeline
(services/generation/anthropic.py translates both ways; docs/anthropic.md). Errors here are Anthropic's shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.caching import CacheModeDep, SemanticCacheDep
from portico.api.deps import PipelineDep, PrincipalDep, SettingsDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.errors import anthropic_error_body
from portico.api.rendering import generated_headers, generation_stream, json_response
from portico.api.streaming import NamedEvent, named_by_type
from portico.constants import Scope
from portico.errors import PorticoError, TooManyMessages
from portico.schemas.anthropic import CountTokensRequest, ErrorResponse, Message, MessageCreateRequest, TokenCount
from portico.schemas.chat import ChatCompletion
from portico.services.generation.anthropic import chat_request, message, message_events, tokenize_request
from portico.services.generation.types import ENDPOINT_MESSAGES, Call

router = APIRouter(tags=["anthropic"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])

# The statuses these routes are known for, and the ranges (which replace the envelope the app declares).
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 410, 413, 415, 429, 500, 503, 504, "4XX", "5XX")
}
STREAM_DOC: dict[str, Any] = {
    "text/event-stream": {
        "schema": {"type": "string"},
        "description": "With `stream: true`: Anthropic's named events (`message_start`, `content_block_start`, "
        "`content_block_delta`, `content_block_stop`, `message_delta`, `message_stop`), `: heartbeat` comments, "
        "and one `error` event on failure.",
    }
}


def _failure(exc: PorticoError) -> NamedEvent:
    return NamedEvent("error", anthropic_error_body(exc))


@router.post(ENDPOINT_MESSAGES, response_model=Message, responses={**ERRORS, 200: {"content": STREAM_DOC}})
async def create_message(
    body: MessageCreateRequest,
    request: Request,
    pipeline: PipelineDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    cache: CacheModeDep,
    semantic: SemanticCacheDep,
) -> Response:
    if len(body.messages) > settings.max_messages:
        raise TooManyMessages(len(body.messages), settings.max_messages)
    call = Call(chat_request(body), ENDPOINT_MESSAGES)
    if body.stream:
        streamed = await pipeline.stream(call, principal)
        events = named_by_type(message_events(streamed.chunks(include_usage=True)))
        return generation_stream(streamed, settings.heartbeat_interval_s, events, done_frame=False, failure=_failure)
    work = pipeline.complete(call, principal, cache=cache, semantic=semantic)
    generated = await cancel_on_disconnect(request, work)
    assert isinstance(generated.body, ChatCompletion)
    return json_response(message(generated.body), headers=generated_headers(generated))


# Counting tokens generates nothing: like /v1/tokenize, it is neither limited nor billed.
@router.post(f"{ENDPOINT_MESSAGES}/count_tokens", response_model=TokenCount, responses=ERRORS)
async def count_message_tokens(body: CountTokensRequest, pipeline: PipelineDep) -> Response:
    _, count = await pipeline.count_tokens(tokenize_request(body))
    return json_response(TokenCount(input_tokens=count))
