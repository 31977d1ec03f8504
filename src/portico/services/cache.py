"""The exact response cache: which requests may be answered from it, under which key, and what a hit returns.

A request is cacheable when its answer is determined by its body: chat and completions at ``temperature`` 0 or
with a ``seed`` (``n`` > 1 included: the whole response is kept), and every embedding request. The key hashes
the project id, the endpoint, the model *snapshot* the alias resolved to, and the validated body as sorted-key
JSON without the fields that don't change the answer, so a hit never crosses projects or model versions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from portico.cache.base import CacheBackend
from portico.constants import CacheMode, CacheStatus
from portico.schemas.common import SamplingFields

# Fields that don't change the answer; `model` is replaced by the snapshot it resolved to.
IGNORED_FIELDS = frozenset({"model", "stream", "stream_options", "user", "metadata", "store"})
KEY_VERSION = 2  # bump when the key's recipe or the stored body's shape changes


@dataclass(frozen=True, slots=True)
class CacheLookup:
    status: CacheStatus
    key: str | None = None  # where to store the fresh answer; None: don't store
    stored: dict[str, Any] | None = None  # the cached response body, on a hit


BYPASS = CacheLookup(CacheStatus.BYPASS)


def deterministic(body: BaseModel) -> bool:
    """Whether the same body always gets the same answer: embeddings, or generation without random sampling."""
    if isinstance(body, SamplingFields):
        return body.temperature == 0 or body.seed is not None
    return True


def cache_key(project_id: str, endpoint: str, snapshot: str, body: BaseModel) -> str:
    request = body.model_dump(mode="json", by_alias=True, exclude=set(IGNORED_FIELDS))
    canonical = json.dumps(
        {"v": KEY_VERSION, "project": project_id, "endpoint": endpoint, "model": snapshot, "request": request},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # The project id also leads the key in clear, so an operator can find (and drop) one project's entries.
    return f"{project_id}:{hashlib.sha256(canonical.encode()).hexdigest()}"


class ResponseCache:
    def __init__(self, backend: CacheBackend, *, ttl_s: float) -> None:
        self.backend = backend
        self.ttl_s = ttl_s

    async def lookup(
        self, project_id: str, endpoint: str, snapshot: str, body: BaseModel, mode: CacheMode
    ) -> CacheLookup:
        if mode is CacheMode.SKIP or not deterministic(body):
            return BYPASS
        key = cache_key(project_id, endpoint, snapshot, body)
        if mode is CacheMode.REFRESH:
            return CacheLookup(CacheStatus.MISS, key)
        raw = await self.backend.get(key)
        if raw is None:
            return CacheLookup(CacheStatus.MISS, key)
        stored: dict[str, Any] = json.loads(raw)
        return CacheLookup(CacheStatus.HIT, key, stored)

    async def store(self, lookup: CacheLookup, response: BaseModel) -> None:
        if lookup.key is not None and lookup.status is CacheStatus.MISS:
            await self.backend.set(lookup.key, response.model_dump_json().encode(), ttl_s=self.ttl_s)

    async def forget_project(self, project_id: str) -> None:
        """Drop the project's cached answers (with the ``memory`` backend: this process's only)."""
        await self.backend.forget(f"{project_id}:")

    async def close(self) -> None:
        await self.backend.close()
