"""The semantic cache: a chat completion or completion answered with the stored answer to a *similar* request.

Two requests are similar when everything but the text compared is equal (the **bucket**: project, endpoint,
model snapshot, every other body field, and for chat every message but the last one, exactly) and the compared
texts — the last message's text, or the completion's prompt — have embeddings whose cosine similarity is at
least ``cache.semantic.threshold``. So a hit never crosses projects, models, parameters or conversation history.

It is opt-in: a model's ``semantic_cache = true`` covers its deterministic requests (``services/cache.py``);
``X-Semantic-Cache: on`` covers a request, sampled ones too; ``off`` keeps a request out. Requests offering
tools never use it: their answer depends on more than the meaning of one message.

The embeddings come from a served ``sentence_transformers`` model, in-process and not billed to anyone. A
compared text longer than that model's window is not cached: a cut text would match any text of the same start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from portico.cache.semantic import SemanticBackend, SemanticEntry, build_semantic_backend
from portico.constants import INLINE_TOKENIZE_CHARS, CacheMode, CacheStatus
from portico.engines.base import Embedder
from portico.engines.registry import ModelRegistry
from portico.errors import PorticoError
from portico.schemas.chat import ChatCompletionRequest
from portico.schemas.completions import CompletionRequest
from portico.services.cache import IGNORED_FIELDS, deterministic
from portico.settings import Settings

logger = logging.getLogger("portico.cache")

BUCKET_VERSION = 2  # bump when the bucket's recipe or the stored entry's shape changes
# Request fields that hand the model tools; any of them keeps a request out of the semantic cache.
TOOL_FIELDS = ("tools", "tool_choice", "functions", "function_call")

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class SemanticLookup:
    status: CacheStatus
    stored: dict[str, Any] | None = None  # the cached response body, on a hit
    similarity: float | None = None  # the compared texts' cosine similarity, on a hit
    bucket: str | None = None  # where to store the fresh answer; None: don't store
    vector: bytes | None = None  # the compared text's embedding (float32, unit length), stored with the answer


SEMANTIC_BYPASS = SemanticLookup(CacheStatus.BYPASS)


def compared_text(body: BaseModel) -> str | None:
    """The text whose meaning is compared: a chat's last message, a completion's one prompt; None for any other
    request (embeddings, several prompts)."""
    if isinstance(body, ChatCompletionRequest):
        return body.messages[-1].text()
    if isinstance(body, CompletionRequest):
        prompts = body.prompts()
        return prompts[0] if len(prompts) == 1 else None
    return None


def offers_tools(body: BaseModel) -> bool:
    return any(getattr(body, field, None) is not None for field in TOOL_FIELDS)


def eligible(body: BaseModel, *, requested: bool | None, model_opt_in: bool) -> bool:
    """Whether the semantic cache may answer ``body``: asked for by the request (``X-Semantic-Cache: on``), or
    by the model for a deterministic request; never with tools or ``X-Semantic-Cache: off``."""
    if requested is False or offers_tools(body):
        return False
    return requested is True or (model_opt_in and deterministic(body))


def bucket_key(project_id: str, endpoint: str, snapshot: str, embedding_model: str, body: BaseModel) -> str:
    """The hash of everything that must be equal for a hit: the request without its compared text (a chat's last
    message keeps its role and name), and the embedding model whose vectors the bucket holds."""
    request = body.model_dump(mode="json", by_alias=True, exclude=set(IGNORED_FIELDS))
    if isinstance(body, ChatCompletionRequest):
        del request["messages"][-1]["content"]
    else:
        del request["prompt"]
    canonical = json.dumps(
        {
            "v": BUCKET_VERSION,
            "project": project_id,
            "endpoint": endpoint,
            "model": snapshot,
            "embedder": embedding_model,
            "request": request,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # The project id leads in clear, so one project's buckets can be found (and dropped).
    return f"{project_id}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def nearest(vector: Vector, entries: list[SemanticEntry]) -> tuple[float, SemanticEntry] | None:
    """The entry most similar to ``vector`` (the newest of equals) and its cosine similarity."""
    comparable = [entry for entry in entries if len(entry.vector) == vector.nbytes]
    if not comparable:
        return None
    matrix = np.frombuffer(b"".join(entry.vector for entry in comparable), dtype=np.float32)
    similarities = matrix.reshape(len(comparable), vector.size) @ vector
    best = int(np.argmax(similarities))
    return float(similarities[best]), comparable[best]


class SemanticCache:
    def __init__(
        self,
        backend: SemanticBackend,
        embedder: Embedder,
        *,
        embedding_model: str,
        threshold: float,
        ttl_s: float,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.embedding_model = embedding_model
        self.threshold = threshold
        self.ttl_s = ttl_s

    async def lookup(
        self,
        project_id: str,
        endpoint: str,
        snapshot: str,
        body: BaseModel,
        mode: CacheMode,
        *,
        requested: bool | None,
        model_opt_in: bool,
    ) -> SemanticLookup:
        text = compared_text(body)
        if mode is CacheMode.SKIP or text is None or not eligible(body, requested=requested, model_opt_in=model_opt_in):
            return SEMANTIC_BYPASS
        vector = await self._embedding(text)
        if vector is None:
            return SEMANTIC_BYPASS
        bucket = bucket_key(project_id, endpoint, snapshot, self.embedding_model, body)
        miss = SemanticLookup(CacheStatus.MISS, bucket=bucket, vector=vector.tobytes())
        if mode is CacheMode.REFRESH:
            return miss
        found = nearest(vector, await self.backend.entries(bucket))
        if found is None or found[0] < self.threshold:
            return miss
        similarity, entry = found
        stored: dict[str, Any] = json.loads(entry.response)
        return SemanticLookup(CacheStatus.HIT, stored, similarity)

    async def store(self, lookup: SemanticLookup, response: BaseModel) -> None:
        if lookup.status is CacheStatus.MISS and lookup.bucket is not None and lookup.vector is not None:
            entry = SemanticEntry(lookup.vector, response.model_dump_json().encode())
            await self.backend.add(lookup.bucket, entry, ttl_s=self.ttl_s)

    async def forget_project(self, project_id: str) -> None:
        """Drop the project's cached answers (with the ``memory`` backend: this process's only)."""
        await self.backend.forget(f"{project_id}:")

    async def close(self) -> None:
        await self.backend.close()

    async def _embedding(self, text: str) -> Vector | None:
        """The text's unit-length embedding; None when it does not fit the embedding model's window, or the model
        cannot embed now (still loading, failed): the request is then answered as if there were no such cache."""
        embedder = self.embedder
        try:
            if len(text) > INLINE_TOKENIZE_CHARS:
                [tokens] = await asyncio.to_thread(embedder.tokenize, [text])
            else:
                [tokens] = embedder.tokenize([text])
            if len(tokens) + embedder.special_tokens > embedder.context_window:
                return None
            [values] = await embedder.embed([tokens])
        except PorticoError as exc:
            logger.warning("semantic cache embedding failed", extra={"error": exc.message})
            return None
        vector = np.asarray(values, dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else None


def build_semantic_cache(settings: Settings, registry: ModelRegistry) -> SemanticCache | None:
    """The semantic cache over the served model ``cache.semantic.embedding_model``; None when the cache is off
    or that model is not served here. A model with ``semantic_cache = true`` then makes this a startup error."""
    if not settings.cache.enabled:
        return None
    name = settings.cache.semantic.embedding_model
    embedder = registry.engine_of(name)
    served_locally = any(model.engine == "sentence_transformers" and name in model.names() for model in settings.models)
    if not served_locally or not isinstance(embedder, Embedder):
        opted_in = [model.alias for model in settings.models if model.semantic_cache]
        if opted_in:
            raise ValueError(
                f"semantic_cache is on for {', '.join(opted_in)}, but cache.semantic.embedding_model '{name}' is "
                "not a sentence_transformers model of this server. Add that model to `models`, or name one."
            )
        return None
    return SemanticCache(
        build_semantic_backend(settings),
        embedder,
        embedding_model=name,
        threshold=settings.cache.semantic.threshold,
        ttl_s=settings.cache.ttl_s,
    )
