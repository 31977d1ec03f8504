"""Admission against a key's limits before work starts, and settlement of what the work really used.

``Meter.admit`` reserves the most a request may use (prompt + max tokens, the most it may cost) in one atomic
limiter call and returns a ``Ticket``. Whatever way the request ends (done, failed, timed out, cancelled, client
gone) its ``settle`` replaces the reservation by the actual usage and records it, exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from portico.auth.principal import Principal
from portico.constants import HEADER_QUOTA_WARNING, PREFIX_LEASE, new_id
from portico.errors import PorticoError, RateLimited
from portico.limits.base import Demand, Limiter, LimitPolicy, Reservation
from portico.observability import metrics, tracing
from portico.observability.context import note_usage
from portico.observability.logging import request_id_var
from portico.settings import PricingSettings
from portico.usage.pricing import cost_usd, most_cost, to_micros
from portico.usage.recorder import UsageRecorder, UsageRow

logger = logging.getLogger("portico.metering")


@dataclass(frozen=True, slots=True)
class UsageCounts:
    prompt_tokens: int
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Settlement:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``250ms``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass(slots=True)
class Ticket:
    meter: Meter
    principal: Principal
    endpoint: str
    model: str
    pricing: PricingSettings
    reservation: Reservation | None
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    settlement: Settlement | None = None
    stream_started: bool = False  # the stream's own ending settles it from then on
    free: bool = False  # a cache hit: recorded with its tokens, charged no tokens and no cost
    # Whether a failure hands the request to a fallback model (services/routing.py), which settles it instead.
    defer_failure: Callable[[PorticoError], bool] | None = None

    @property
    def quota_warning(self) -> str | None:
        if self.reservation is None or not self.reservation.warnings:
            return None
        return ", ".join(warning.header_value() for warning in self.reservation.warnings)

    def headers(self) -> dict[str, str]:
        """x-ratelimit-* (OpenAI's names) for the limits that apply, and X-Quota-Warning past 80%."""
        headers: dict[str, str] = {}
        reservation = self.reservation
        if reservation is None:
            return headers
        for kind, state in (("requests", reservation.requests), ("tokens", reservation.tokens)):
            if state is not None:
                headers[f"x-ratelimit-limit-{kind}"] = str(state.limit)
                headers[f"x-ratelimit-remaining-{kind}"] = str(state.remaining)
                headers[f"x-ratelimit-reset-{kind}"] = _duration(state.reset_s)
        if (warning := self.quota_warning) is not None:
            headers[HEADER_QUOTA_WARNING] = warning
        return headers

    def cost_of(self, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> float:
        if self.free:
            return 0.0
        return cost_usd(
            self.pricing, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=cached_tokens
        )

    def defers(self, error: PorticoError) -> bool:
        """Whether ``error`` leaves the ticket to a fallback; never once a stream has started."""
        return not self.stream_started and self.defer_failure is not None and self.defer_failure(error)

    def retarget(self, model: str, pricing: PricingSettings) -> None:
        """A fallback model takes over: its name and prices are what gets recorded and charged."""
        self.model, self.pricing = model, pricing

    def note_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def settle_unstarted(self) -> None:
        """For a stream whose body never ran (the client left at once): nothing was used, release the lease."""
        if not self.stream_started:
            self.settle(prompt_tokens=0, completion_tokens=0, cached_tokens=0, status=499, cancelled=True)

    def settle(
        self, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int, status: int, cancelled: bool = False
    ) -> Settlement:
        """Charge the actual usage and record it; later calls return the first settlement unchanged."""
        if self.settlement is not None:
            return self.settlement
        cost = self.cost_of(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=cached_tokens
        )
        self.settlement = Settlement(prompt_tokens, completion_tokens, cached_tokens, cost)
        now = time.perf_counter()
        self._publish(self.settlement, status, now)
        if self.reservation is not None and self.reservation.enforced:
            self.meter.spawn(
                self.meter.limiter.settle(
                    self.reservation,
                    tokens=0 if self.free else prompt_tokens + completion_tokens,
                    cost_micros=to_micros(cost),
                )
            )
        wall = time.time()
        self.meter.recorder.record(
            UsageRow(
                request_id=self.request_id,
                organization_id=self.principal.organization_id,
                project_id=self.principal.project_id,
                key_id=self.principal.key_id,
                model=self.model,
                endpoint=self.endpoint,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cached_tokens=cached_tokens,
                cost_usd=cost,
                latency_ms=(now - self.started) * 1000,
                ttft_ms=None if self.first_token_at is None else (self.first_token_at - self.started) * 1000,
                status=status,
                cancelled=cancelled,
                created_at=wall,
                day=datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%d"),
            )
        )
        return self.settlement

    def _publish(self, settlement: Settlement, status: int, now: float) -> None:
        """The settled usage into the metrics and the request's access log line."""
        metrics.observe_usage(
            endpoint=self.endpoint,
            model=self.model,
            status=status,
            prompt_tokens=settlement.prompt_tokens,
            completion_tokens=settlement.completion_tokens,
            seconds=now - self.started,
            first_token_s=None if self.first_token_at is None else self.first_token_at - self.started,
        )
        note_usage(
            self.model,
            prompt_tokens=settlement.prompt_tokens,
            completion_tokens=settlement.completion_tokens,
            cached_tokens=settlement.cached_tokens,
        )


class Meter:
    def __init__(self, limiter: Limiter, recorder: UsageRecorder) -> None:
        self.limiter = limiter
        self.recorder = recorder
        self._settling: set[asyncio.Task[None]] = set()

    async def admit(
        self,
        principal: Principal,
        *,
        endpoint: str,
        model: str,
        pricing: PricingSettings,
        prompt_tokens: int,
        max_completion_tokens: int,
    ) -> Ticket:
        """Reserve against every limit of the principal; raises the ``RateLimited`` error of a limit that trips."""
        request_id = request_id_var.get() or ""
        reservation = None
        if not principal.policy.unlimited:
            demand = Demand(
                subject=principal.subject,
                lease_id=new_id(PREFIX_LEASE),  # request ids may come from clients: not unique
                tokens=prompt_tokens + max_completion_tokens,
                cost_micros=to_micros(
                    most_cost(pricing, prompt_tokens=prompt_tokens, max_completion_tokens=max_completion_tokens)
                ),
            )
            reservation = await self._reserve(demand, principal.policy)
        return Ticket(self, principal, endpoint, model, pricing, reservation, request_id)

    async def admit_free(self, principal: Principal, *, endpoint: str, model: str, pricing: PricingSettings) -> Ticket:
        """A cache hit: one request against the request rate and concurrency limits, no tokens, no cost."""
        request_id = request_id_var.get() or ""
        reservation = None
        if not principal.policy.unlimited:
            demand = Demand(subject=principal.subject, lease_id=new_id(PREFIX_LEASE), tokens=0, cost_micros=0)
            reservation = await self._reserve(demand, principal.policy)
        return Ticket(self, principal, endpoint, model, pricing, reservation, request_id, free=True)

    async def _reserve(self, demand: Demand, policy: LimitPolicy) -> Reservation:
        """The limiter's reservation; a refusal is counted under the limit that tripped."""
        with tracing.span("portico.limits"):
            try:
                return await self.limiter.reserve(demand, policy)
            except RateLimited as exc:
                metrics.rate_limited(exc.code)
                raise

    def spawn(self, settling: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(settling)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def close(self) -> None:
        """Wait for settlements in flight, then write every usage record."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self.recorder.close()
        await self.limiter.close()


@contextmanager
def settled_on_exit(ticket: Ticket, used: Callable[[], UsageCounts]) -> Iterator[None]:
    """Settle ``ticket`` with ``used()`` however the block ends: status 200, the error's status, or 499; unless
    the error hands the request to a fallback (``Ticket.defers``)."""
    status, cancelled, deferred = 500, False, False
    try:
        yield
        status = 200
    except PorticoError as exc:
        status, deferred = exc.status_code, ticket.defers(exc)
        raise
    except (asyncio.CancelledError, GeneratorExit):
        status, cancelled = 499, True
        raise
    finally:
        if not deferred:  # a deferred failure is settled by the fallback that takes over
            counts = used()
            ticket.settle(
                prompt_tokens=counts.prompt_tokens,
                completion_tokens=counts.completion_tokens,
                cached_tokens=counts.cached_tokens,
                status=status,
                cancelled=cancelled,
            )
