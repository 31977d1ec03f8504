"""A real Redis (127.0.0.1:6379) for the limiter tests, under a fresh key prefix per test, removed afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from redis.asyncio import Redis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture
def redis_prefix() -> str:
    return f"portico:test:{uuid4().hex}:"


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[Redis]:
    client = Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2, socket_timeout=2)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()
