"""The semantic cache's backends: per bucket the newest entries; memory bounded and LRU over buckets; Redis
entries shared, capped and expiring."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from portico.cache.semantic import MemorySemanticCache, RedisSemanticCache, SemanticEntry


def entry(name: str) -> SemanticEntry:
    return SemanticEntry(vector=b"\x00" * 8, response=name.encode())


def names(entries: list[SemanticEntry]) -> list[str]:
    return [item.response.decode() for item in entries]


async def test_a_bucket_keeps_its_newest_entries_newest_first() -> None:
    cache = MemorySemanticCache(max_entries_per_bucket=2, max_entries=100, max_bytes=10_000)
    for name in ("one", "two", "three"):
        await cache.add("proj_a:b", entry(name), ttl_s=60)
    assert names(await cache.entries("proj_a:b")) == ["three", "two"]
    assert await cache.entries("proj_a:other") == []
    assert cache.entry_count == 2


async def test_the_least_recently_used_bucket_gives_way() -> None:
    cache = MemorySemanticCache(max_entries_per_bucket=4, max_entries=3, max_bytes=10_000)
    await cache.add("p:a", entry("a1"), ttl_s=60)
    await cache.add("p:a", entry("a2"), ttl_s=60)
    await cache.add("p:b", entry("b1"), ttl_s=60)
    await cache.entries("p:a")  # now "b" is the least recently used
    await cache.add("p:c", entry("c1"), ttl_s=60)
    assert names(await cache.entries("p:b")) == []
    assert names(await cache.entries("p:a")) == ["a2", "a1"]
    assert names(await cache.entries("p:c")) == ["c1"]


async def test_the_byte_bound_holds_and_a_too_large_entry_is_not_kept() -> None:
    cache = MemorySemanticCache(max_entries_per_bucket=10, max_entries=100, max_bytes=30)
    for name in ("aa", "bb", "cc"):
        await cache.add("p:a", entry(name), ttl_s=60)  # 10 bytes each
    await cache.add("p:a", entry("dd"), ttl_s=60)
    assert cache.size_bytes <= 30 and names(await cache.entries("p:a")) == ["dd", "cc", "bb"]
    await cache.add("p:a", SemanticEntry(b"\x00" * 8, b"x" * 23), ttl_s=60)
    assert names(await cache.entries("p:a")) == ["dd", "cc", "bb"]


async def test_entries_expire_after_their_ttl() -> None:
    now = [100.0]
    cache = MemorySemanticCache(max_entries_per_bucket=4, max_entries=10, max_bytes=1_000, clock=lambda: now[0])
    await cache.add("p:a", entry("old"), ttl_s=5)
    now[0] += 3
    await cache.add("p:a", entry("new"), ttl_s=5)
    now[0] += 2.5
    assert names(await cache.entries("p:a")) == ["new"]
    now[0] += 3
    assert await cache.entries("p:a") == []
    assert cache.entry_count == 0 and cache.size_bytes == 0


async def test_forget_drops_one_projects_buckets() -> None:
    cache = MemorySemanticCache(max_entries_per_bucket=4, max_entries=10, max_bytes=1_000)
    for bucket in ("proj_a:1", "proj_a:2", "proj_ab:1"):
        await cache.add(bucket, entry(bucket), ttl_s=60)
    await cache.forget("proj_a:")
    assert (await cache.entries("proj_a:1"), await cache.entries("proj_a:2")) == ([], [])
    assert names(await cache.entries("proj_ab:1")) == ["proj_ab:1"]
    assert cache.entry_count == 1


async def test_redis_caps_each_bucket_and_expires_it(redis_client: Redis, redis_prefix: str) -> None:
    cache = RedisSemanticCache(redis_client, prefix=redis_prefix, max_entries_per_bucket=2)
    for name in ("one", "two", "three"):
        await cache.add("proj_a:b", entry(name), ttl_s=60)
    assert names(await cache.entries("proj_a:b")) == ["three", "two"]
    assert await redis_client.llen(f"{redis_prefix}proj_a:b") == 2
    assert 0 < await redis_client.pttl(f"{redis_prefix}proj_a:b") <= 60_000
    await cache.add("proj_a:short", entry("brief"), ttl_s=0.05)
    await asyncio.sleep(0.1)
    assert await cache.entries("proj_a:short") == []


async def test_redis_forget_drops_one_projects_buckets(redis_client: Redis, redis_prefix: str) -> None:
    cache = RedisSemanticCache(redis_client, prefix=redis_prefix, max_entries_per_bucket=2)
    for bucket in ("proj_a:1", "proj_a:2", "proj_ab:1"):
        await cache.add(bucket, entry(bucket), ttl_s=60)
    await cache.forget("proj_a:")
    assert (await cache.entries("proj_a:1"), await cache.entries("proj_a:2")) == ([], [])
    assert names(await cache.entries("proj_ab:1")) == ["proj_ab:1"]
