"""The Redis cache on the real Redis, and two apps sharing it: hits cross processes, never projects."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from portico.cache.redis import RedisCache
from portico.services.admin import AdminService
from portico.settings import Settings
from tests.api.test_cache import SCOPES, chat
from tests.cache.conftest import REDIS_URL
from tests.conftest import ECHO_ALIAS, asgi_client, auth_settings, bearer, make_key


async def test_values_round_trip_under_the_prefix_and_expire(redis_client: Redis, redis_prefix: str) -> None:
    cache = RedisCache(redis_client, prefix=redis_prefix)
    await cache.set("k", b"value", ttl_s=60)
    assert await cache.get("k") == b"value"
    assert await redis_client.get(f"{redis_prefix}k") == b"value"
    assert 0 < await redis_client.pttl(f"{redis_prefix}k") <= 60_000
    assert await cache.get("absent") is None


async def test_forget_drops_one_projects_entries(redis_client: Redis, redis_prefix: str) -> None:
    cache = RedisCache(redis_client, prefix=redis_prefix)
    for key in ("proj_a:1", "proj_a:2", "proj_ab:1"):
        await cache.set(key, b"v", ttl_s=60)
    await RedisCache(redis_client, prefix=f"{redis_prefix}x").set("proj_a:3", b"v", ttl_s=60)  # another prefix
    await cache.forget("proj_a:")
    assert (await cache.get("proj_a:1"), await cache.get("proj_a:2")) == (None, None)
    assert await cache.get("proj_ab:1") == b"v"
    assert await redis_client.get(f"{redis_prefix}xproj_a:3") == b"v"


async def test_an_unreachable_redis_is_a_miss_not_an_error() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    cache = RedisCache(client, prefix="portico:test:")
    await cache.set("k", b"value", ttl_s=60)
    assert await cache.get("k") is None
    await cache.close()


def redis_settings(redis_prefix: str) -> Settings:
    return auth_settings(redis_url=REDIS_URL, cache={"backend": "redis", "key_prefix": redis_prefix})


async def key_for(app: FastAPI, project_id: str) -> dict[str, str]:
    return bearer(await make_key(app, project=project_id, scopes=SCOPES))


async def test_two_apps_share_hits_within_a_project(redis_client: Redis, redis_prefix: str) -> None:
    async with asgi_client(redis_settings(redis_prefix)) as (one, app_one):
        admin: AdminService = app_one.state.runtime.control.admin
        organization = app_one.state.runtime.control.local_principal.organization_id
        project_a = await admin.create_project(organization, "a")
        project_b = await admin.create_project(organization, "b")
        key_a, key_b = await key_for(app_one, project_a.id), await key_for(app_one, project_b.id)
        miss = await one.post("/v1/chat/completions", json=chat(), headers=key_a)
        assert miss.headers["x-cache-status"] == "miss"

        # A second app on the same database and Redis (another process, another host).
        async with asgi_client(redis_settings(redis_prefix)) as (two, _):
            hit = await two.post("/v1/chat/completions", json=chat(), headers=key_a)
            other_project = await two.post("/v1/chat/completions", json=chat(), headers=key_b)

    assert hit.headers["x-cache-status"] == "hit" and hit.json()["choices"] == miss.json()["choices"]
    assert hit.json()["usage"]["cost"] == 0
    assert other_project.headers["x-cache-status"] == "miss"
    stored = [key async for key in redis_client.scan_iter(match=f"{redis_prefix}*")]
    assert sorted(key.decode().split(":")[-2] for key in stored) == sorted([project_a.id, project_b.id])


def test_a_redis_backend_needs_a_url() -> None:
    with pytest.raises(ValueError, match="redis_url"):
        Settings(cache={"backend": "redis"})


async def test_entries_outlive_a_restart(redis_prefix: str, redis_client: Redis) -> None:
    body = {"model": ECHO_ALIAS, "prompt": "kept in redis", "seed": 3, "max_tokens": 6}
    async with asgi_client(redis_settings(redis_prefix)) as (client, app):
        key = bearer(await make_key(app, scopes=SCOPES))
        first = await client.post("/v1/completions", json=body, headers=key)
    async with asgi_client(redis_settings(redis_prefix)) as (client, _):
        again = await client.post("/v1/completions", json=body, headers=key)
    assert (first.headers["x-cache-status"], again.headers["x-cache-status"]) == ("miss", "hit")
    assert again.json()["choices"] == first.json()["choices"]
