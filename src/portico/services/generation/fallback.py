"""Fallbacks: the model a request named, then that model's ``fallbacks`` in order — itself a backend.

A model whose deployments fail retryably (after their own retries, see upstream.py), whose circuits are all
open, or whose local engine is overloaded hands the request to its next fallback; a prompt too long for its
context window goes to the next fallback with a larger one. Only failures before the first byte of the answer
get here: a started stream is never restarted elsewhere.

Every attempt shares the request's ``Charge``: the request is admitted once (one request against the rate
limits) and recorded once, under the model that answered it; a failed attempt's usage is not charged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from portico.constants import Priority
from portico.engines.registry import ModelRegistry, ServedModel
from portico.engines.upstream import UPSTREAM_FAILURES, UpstreamEngine
from portico.engines.versions import note_named
from portico.errors import (
    ContextLengthExceeded,
    EngineOverloaded,
    EngineUnavailable,
    PorticoError,
    UpstreamContextExceeded,
)
from portico.schemas.embeddings import EmbeddingRequest
from portico.services.generation.local import LocalBackend
from portico.services.generation.types import Answer, Backend, Call, Moderated, Opened, TextRequest, Vectors
from portico.services.generation.upstream import UpstreamBackend
from portico.usage.meter import Charge

logger = logging.getLogger("portico.gateway")
_T = TypeVar("_T")

FALLBACK_FAILURES = (*UPSTREAM_FAILURES, EngineOverloaded, EngineUnavailable)
CONTEXT_FAILURES = (ContextLengthExceeded, UpstreamContextExceeded)


@dataclass(frozen=True, slots=True)
class BackendOptions:
    timeout_s: float  # the interactive request_timeout_s
    max_n: int


def backend_for(served: ServedModel, options: BackendOptions) -> Backend:
    """The backend of one served model: its upstream deployments, or its engine in this process."""
    if isinstance(served.engine, UpstreamEngine):
        return UpstreamBackend(served, served.engine)
    return LocalBackend(served, timeout_s=options.timeout_s, max_n=options.max_n)


def _window(served: ServedModel) -> int:
    return served.engine.context_window


class FallbackChain:
    """One request's candidates in order; the first to answer (or to fail in a way no fallback takes) ends it."""

    def __init__(self, candidates: list[ServedModel], options: BackendOptions) -> None:
        self.candidates = candidates
        self._options = options
        self.position = 0

    @property
    def served(self) -> ServedModel:
        """The candidate of the current attempt."""
        return self.candidates[self.position]

    @property
    def primary(self) -> bool:
        """Whether the current attempt is on the model the request named (so its answer may be cached)."""
        return self.position == 0

    def _next(self, error: PorticoError) -> int | None:
        """The position of the candidate that takes over after ``error``, or None if none does."""
        later = range(self.position + 1, len(self.candidates))
        if isinstance(error, CONTEXT_FAILURES):
            window = _window(self.served)
            return next((n for n in later if _window(self.candidates[n]) > window), None)
        if isinstance(error, FALLBACK_FAILURES):
            return next(iter(later), None)
        return None

    async def _first(self, attempt: Callable[[Backend], Awaitable[_T]], charge: Charge | None) -> _T:
        while True:
            try:
                return await attempt(backend_for(self.served, self._options))
            except PorticoError as exc:
                following = self._next(exc)
                if following is None:
                    raise
                logger.warning(
                    "model %s failed (%s); falling back to %s",
                    self.served.alias,
                    exc.code,
                    self.candidates[following].alias,
                )
                self.position = following
                if charge is not None:
                    charge.next_attempt()
                note_named(self.served.version)  # its Deprecation/Sunset headers, now that it may answer

    async def complete(self, call: Call, charge: Charge) -> Answer:
        return await self._first(lambda backend: backend.complete(call, charge), charge)

    async def stream(self, call: Call, charge: Charge) -> Opened:
        return await self._first(lambda backend: backend.stream(call, charge), charge)

    async def embed(self, body: EmbeddingRequest, charge: Charge, priority: Priority) -> Vectors:
        return await self._first(lambda backend: backend.embed(body, charge, priority), charge)

    async def moderate(self, texts: list[str], charge: Charge | None, priority: Priority) -> Moderated:
        return await self._first(lambda backend: backend.moderate(texts, charge, priority), charge)

    async def check(self, body: TextRequest | EmbeddingRequest) -> None:
        await backend_for(self.served, self._options).check(body)


def chain(registry: ModelRegistry, name: str, options: BackendOptions) -> FallbackChain:
    """The model ``name`` resolves to (404/410 as usual), then its fallbacks (noted only when one takes over)."""
    primary = registry.resolve(name)
    candidates = [primary, *(registry.by_alias(alias) for alias in primary.settings.fallbacks)]
    return FallbackChain(candidates, options)
