"""POST /v1/completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.deps import InferenceDep, MeterDep, PrincipalDep, SettingsDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.responses import (
    GENERATION_ERRORS,
    STREAM_DOC,
    admit,
    json_response,
    metered_headers,
    usage_chunk_extras,
    wire_usage,
)
from portico.api.streaming import sse_response
from portico.constants import PREFIX_COMPLETION, Scope, new_id
from portico.schemas.completions import Completion, CompletionChoice, CompletionRequest
from portico.services.inference import ChoiceDelta, ChoiceEnd, StreamEvent
from portico.services.metering import Ticket

ENDPOINT = "/v1/completions"
router = APIRouter(tags=["completions"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])


@router.post(
    ENDPOINT,
    response_model=Completion,
    responses={**GENERATION_ERRORS, 200: {"content": STREAM_DOC}},
)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    service: InferenceDep,
    settings: SettingsDep,
    meter: MeterDep,
    principal: PrincipalDep,
) -> Response:
    prepared = await service.prepare_completion(body)
    completion_id = new_id(PREFIX_COMPLETION)
    created = int(time.time())
    model = prepared.served.snapshot
    if body.stream:
        service.ensure_room(prepared)
        ticket = await admit(meter, principal, prepared, ENDPOINT)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = _chunks(service.stream(prepared, ticket), ticket, completion_id, created, model, include_usage)
        return sse_response(
            chunks,
            heartbeat_s=settings.heartbeat_interval_s,
            headers=ticket.headers(),
            on_close=ticket.settle_unstarted,
        )
    ticket = await admit(meter, principal, prepared, ENDPOINT)
    result = await cancel_on_disconnect(request, service.complete(prepared, ticket))
    return json_response(
        Completion(
            id=completion_id,
            created=created,
            model=model,
            choices=[
                CompletionChoice(index=i, text=c.text, finish_reason=c.finish_reason.value)
                for i, c in enumerate(result.choices)
            ],
            usage=wire_usage(result.usage, ticket),
        ),
        headers=metered_headers(ticket),
    )


async def _chunks(
    events: AsyncIterator[StreamEvent],
    ticket: Ticket,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        body = {"id": completion_id, "object": "text_completion", "created": created, "model": model}
        return {**body, "choices": choices, **extra}

    async for event in events:
        if isinstance(event, ChoiceDelta):
            yield chunk([{"index": event.index, "text": event.text, "finish_reason": None, "logprobs": None}])
        elif isinstance(event, ChoiceEnd):
            finish = event.finish_reason.value
            yield chunk([{"index": event.index, "text": "", "finish_reason": finish, "logprobs": None}])
        elif include_usage:
            yield chunk([], **usage_chunk_extras(event.usage, ticket))
