"""The response cache at the HTTP boundary: the client's Cache-Control in, X-Cache-Status out."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from portico.constants import HEADER_CACHE_CONTROL, HEADER_CACHE_STATUS, CacheMode, CacheStatus


def cache_mode(request: Request) -> CacheMode:
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


def cache_status_header(status: CacheStatus) -> dict[str, str]:
    return {HEADER_CACHE_STATUS: status.value}
