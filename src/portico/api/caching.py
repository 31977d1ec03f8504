"""The response caches at the HTTP boundary: the client's Cache-Control and X-Semantic-Cache in (X-Cache-Status
and X-Cache-Similarity go out with ``api/responses.generated_headers``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from portico.constants import HEADER_CACHE_CONTROL, HEADER_SEMANTIC_CACHE, CacheMode
from portico.errors import InvalidRequest


async def cache_mode(request: Request) -> CacheMode:
    """``Cache-Control: no-store``: neither read nor store; ``no-cache``: don't read, store the fresh answer."""
    directives = {
        part.strip().split("=", 1)[0].lower() for part in request.headers.get(HEADER_CACHE_CONTROL, "").split(",")
    }
    if "no-store" in directives:
        return CacheMode.SKIP
    if "no-cache" in directives:
        return CacheMode.REFRESH
    return CacheMode.USE


CacheModeDep = Annotated[CacheMode, Depends(cache_mode)]


async def semantic_cache_request(request: Request) -> bool | None:
    """``X-Semantic-Cache: on``: use the semantic cache (sampled requests too); ``off``: don't; absent: the model's
    setting decides."""
    value = request.headers.get(HEADER_SEMANTIC_CACHE)
    if value is None:
        return None
    choice = {"on": True, "off": False}.get(value.strip().lower())
    if choice is None:
        raise InvalidRequest(
            f"The X-Semantic-Cache header must be 'on' or 'off', not '{value[:64]}'.", param="X-Semantic-Cache"
        )
    return choice


SemanticCacheDep = Annotated[bool | None, Depends(semantic_cache_request)]
