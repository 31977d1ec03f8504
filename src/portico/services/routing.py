"""Fallbacks: a request's way through the model it named, then that model's ``fallbacks`` in order.

A model whose deployments fail retryably (after their own retries, see services/upstream.py), whose circuits
are all open, or whose local engine is overloaded hands the request to its next fallback; a prompt too long for
its context window goes to the next fallback with a larger one. Only failures before the first byte of the
answer get here: a started stream is never restarted elsewhere.

Every attempt shares one ticket: the request is admitted once (one request against the rate limits) and
recorded once, under the model that answered it. An attempt that fails over leaves the ticket unsettled
(``Ticket.defer_failure``); the next attempt re-targets it to its own model and pricing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from portico.engines.registry import ModelRegistry, ServedModel
from portico.engines.upstream import UPSTREAM_FAILURES
from portico.engines.versions import note_named
from portico.errors import (
    ContextLengthExceeded,
    EngineOverloaded,
    EngineUnavailable,
    PorticoError,
    UpstreamContextExceeded,
)
from portico.services.metering import Ticket

logger = logging.getLogger("portico.gateway")
_T = TypeVar("_T")

# Failures a fallback may answer instead (the context-window ones need a fallback with a larger window).
FALLBACK_FAILURES = (*UPSTREAM_FAILURES, EngineOverloaded, EngineUnavailable)
CONTEXT_FAILURES = (ContextLengthExceeded, UpstreamContextExceeded)


def _window(served: ServedModel) -> int:
    return served.engine.context_window


@dataclass(slots=True)
class Route:
    """One request's candidates (the named model, then its fallbacks) and the ticket its attempts share."""

    candidates: list[ServedModel]
    position: int = 0
    ticket: Ticket | None = None

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

    def falls_back(self, error: PorticoError) -> bool:
        return self._next(error) is not None

    async def ticket_for(
        self, admit: Callable[[], Awaitable[Ticket]], on_admit: Callable[[Ticket], None] | None = None
    ) -> Ticket:
        """The first attempt's admission (``on_admit`` is told of it), or the shared ticket re-targeted to this
        attempt's model."""
        if self.ticket is None:
            self.ticket = await admit()
            self.ticket.defer_failure = self.falls_back
            if on_admit is not None:
                on_admit(self.ticket)
        else:
            self.ticket.retarget(self.served.snapshot, self.served.settings.pricing)
        return self.ticket

    async def run(self, attempt: Callable[[Route], Awaitable[_T]]) -> _T:
        """``attempt`` on each candidate in turn until one answers or fails in a way no fallback takes over.

        The ticket is settled by the attempt that ends the request; if that attempt failed before reaching its
        settled part (e.g. a fallback's own validation), it is settled here with no usage.
        """
        try:
            while True:
                try:
                    return await attempt(self)
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
                    note_named(self.served.version)  # its Deprecation/Sunset headers, now that it may answer
        except PorticoError as exc:
            if self.ticket is not None:
                self.ticket.settle(prompt_tokens=0, completion_tokens=0, cached_tokens=0, status=exc.status_code)
            raise
        except BaseException:
            if self.ticket is not None:
                self.ticket.settle(prompt_tokens=0, completion_tokens=0, cached_tokens=0, status=499, cancelled=True)
            raise


def route(registry: ModelRegistry, name: str) -> Route:
    """The model ``name`` resolves to (404/410 as usual), then its fallbacks (noted only when one takes over)."""
    primary = registry.resolve(name)
    return Route([primary, *(registry.by_alias(alias) for alias in primary.settings.fallbacks)])
