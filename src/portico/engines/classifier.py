"""The embedded moderation model: Portico's safety classifier head (``safety/head.py``) over the vectors of a
sentence-transformers model, by default the bundled all-MiniLM-L6-v2 it was trained on.

A text is scored on windows of ``WINDOW_TOKENS`` word pieces, overlapping by ``WINDOW_OVERLAP``: the head was
trained on sentences and short messages, and a long text's one vector dilutes a harmful sentence in it. A text's
score in each category is its highest window's. Windows of concurrent requests share forward passes (the
embedder's micro-batcher, on its worker thread), so classification never runs on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from portico.constants import Capability
from portico.engines.base import Classified, EmbedderStats
from portico.engines.sentence_transformers import SentenceTransformersEngine
from portico.errors import EngineError, EngineUnavailable
from portico.safety.head import SafetyHead
from portico.safety.policy import Category
from portico.settings import ClassifierModel

WINDOW_TOKENS = 128
WINDOW_OVERLAP = 32


def windows(tokens: list[int], size: int = WINDOW_TOKENS, overlap: int = WINDOW_OVERLAP) -> list[list[int]]:
    """``tokens`` cut into windows of at most ``size``, each starting ``size - overlap`` after the last."""
    if len(tokens) <= size:
        return [tokens]
    step = size - overlap
    return [tokens[start : start + size] for start in range(0, len(tokens) - overlap, step)]


class SafetyClassifierEngine:
    capabilities = frozenset({Capability.MODERATION})

    def __init__(self, settings: ClassifierModel) -> None:
        self._settings = settings
        self._embedder = SentenceTransformersEngine(settings.embedder())
        self.slots = settings.parallel_slots
        self.context_window = WINDOW_TOKENS
        self.stats: EmbedderStats = self._embedder.stats
        self._head: SafetyHead | None = None

    async def start(self) -> None:
        await self._embedder.start()
        path = self._settings.head
        head = await asyncio.to_thread(SafetyHead.bundled if path is None else lambda: SafetyHead.load(path))
        if head.dimensions != self._embedder.dimensions:
            raise EngineError(
                f"The classifier head reads {head.dimensions}-dimensional vectors, but the embeddings model makes "
                f"{self._embedder.dimensions}; the head was trained on '{head.embedding_model}'."
            )
        self._head = head

    async def close(self) -> None:
        await self._embedder.close()
        self._head = None

    async def classify(self, texts: Sequence[str]) -> Classified:
        head = self._head
        if head is None:
            raise EngineUnavailable("The moderation model is not loaded yet (the server is starting). Retry shortly.")
        tokenized = self._embedder.tokenize(texts)
        owners: list[int] = []
        pieces: list[list[int]] = []
        for owner, tokens in enumerate(tokenized):
            for window in windows(tokens):
                owners.append(owner)
                pieces.append(window)
        scored = head.scores(await self._embedder.embed(pieces))
        scores: list[dict[Category, float]] = [dict.fromkeys(head.labels, 0.0) for _ in texts]
        for owner, window_scores in zip(owners, scored, strict=True):
            best = scores[owner]
            for category, score in window_scores.items():
                best[category] = max(best[category], score)
        return Classified(scores, sum(len(tokens) for tokens in tokenized))
