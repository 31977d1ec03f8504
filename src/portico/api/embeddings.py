"""POST /v1/embeddings."""

from __future__ import annotations

import base64
import struct

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.deps import EmbeddingsDep, MeterDep, PrincipalDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.responses import error_responses, json_response, metered_headers
from portico.constants import Scope
from portico.schemas.embeddings import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage

ENDPOINT = "/v1/embeddings"
router = APIRouter(tags=["embeddings"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the vector as little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


@router.post(
    ENDPOINT, response_model=EmbeddingList, responses=error_responses(400, 401, 403, 404, 413, 415, 429, 500, 503)
)
async def create_embeddings(
    body: EmbeddingRequest, request: Request, service: EmbeddingsDep, meter: MeterDep, principal: PrincipalDep
) -> Response:
    prepared = await service.prepare(body)
    ticket = await meter.admit(
        principal,
        endpoint=ENDPOINT,
        model=prepared.served.snapshot,
        pricing=prepared.served.settings.pricing,
        prompt_tokens=prepared.prompt_tokens,
        max_completion_tokens=0,
    )
    vectors = await cancel_on_disconnect(request, service.embed(prepared, ticket))
    cost = ticket.settlement.cost_usd if ticket.settlement is not None else 0.0
    as_base64 = body.encoding_format == "base64"
    return json_response(
        EmbeddingList(
            data=[
                Embedding(index=i, embedding=_base64(vector) if as_base64 else vector)
                for i, vector in enumerate(vectors)
            ],
            model=prepared.served.snapshot,
            usage=EmbeddingUsage(prompt_tokens=prepared.prompt_tokens, total_tokens=prepared.prompt_tokens, cost=cost),
        ),
        headers=metered_headers(ticket),
    )
