"""The in-process LRU: bounded by entries and by bytes, least recently used out first, entries expire."""

from __future__ import annotations

from portico.cache.memory import MemoryCache


async def test_the_entry_bound_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(max_entries=2, max_bytes=1_000)
    await cache.set("a", b"1", ttl_s=60)
    await cache.set("b", b"2", ttl_s=60)
    assert await cache.get("a") == b"1"  # now "b" is the least recently used
    await cache.set("c", b"3", ttl_s=60)
    assert len(cache) == 2
    assert (await cache.get("a"), await cache.get("b"), await cache.get("c")) == (b"1", None, b"3")


async def test_the_byte_bound_holds_and_a_too_large_value_is_not_kept() -> None:
    cache = MemoryCache(max_entries=100, max_bytes=10)
    for key in "abcd":
        await cache.set(key, b"xxxx", ttl_s=60)
    assert cache.size_bytes <= 10 and len(cache) == 2
    assert await cache.get("a") is None and await cache.get("d") == b"xxxx"
    await cache.set("big", b"x" * 11, ttl_s=60)
    assert await cache.get("big") is None and await cache.get("d") == b"xxxx"
    await cache.set("d", b"yy", ttl_s=60)  # replacing an entry counts its new size only
    assert cache.size_bytes == 6


async def test_entries_expire_after_their_ttl() -> None:
    now = [100.0]
    cache = MemoryCache(max_entries=10, max_bytes=100, clock=lambda: now[0])
    await cache.set("a", b"1", ttl_s=5)
    now[0] += 4.9
    assert await cache.get("a") == b"1"
    now[0] += 0.2
    assert await cache.get("a") is None
    assert len(cache) == 0 and cache.size_bytes == 0


async def test_forget_drops_the_entries_under_a_prefix_only() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=100)
    for key in ("proj_a:1", "proj_a:2", "proj_ab:1"):
        await cache.set(key, b"12", ttl_s=60)
    await cache.forget("proj_a:")
    assert (await cache.get("proj_a:1"), await cache.get("proj_a:2")) == (None, None)
    assert await cache.get("proj_ab:1") == b"12" and cache.size_bytes == 2
