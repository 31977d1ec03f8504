"""The one way Portico opens a Redis client (the limiter's, the response cache's, the semantic cache's).

Short timeouts and one immediate retry (a pooled connection may have died with a Redis restart), then the caller's
failure policy: redis-py's default backoff would hold every request for seconds while Redis is down.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def redis_client(url: str, *, timeout_s: float) -> Redis:
    """A client of ``url`` whose connects and calls each give up after ``timeout_s``."""
    return Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 1))
