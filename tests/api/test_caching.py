"""The semantic cache's request header: X-Semantic-Cache on, off, or a 400 naming it."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from portico.api.caching import semantic_cache_request
from portico.errors import InvalidRequest


def request_with(*headers: tuple[str, str]) -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers]  # as servers pass them
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": raw})


async def test_x_semantic_cache_on_off_or_absent() -> None:
    assert await semantic_cache_request(request_with(("X-Semantic-Cache", "on"))) is True
    assert await semantic_cache_request(request_with(("x-semantic-cache", " OFF "))) is False
    assert await semantic_cache_request(request_with()) is None


async def test_any_other_x_semantic_cache_value_is_a_400_naming_the_header() -> None:
    with pytest.raises(InvalidRequest, match="X-Semantic-Cache header must be 'on' or 'off', not 'yes'") as raised:
        await semantic_cache_request(request_with(("X-Semantic-Cache", "yes")))
    assert raised.value.status_code == 400 and raised.value.param == "X-Semantic-Cache"
