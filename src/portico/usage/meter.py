"""Admission against a key's limits before work starts, and settlement of what the work really used.

``Meter.admit`` reserves the most a request may use (prompt + max tokens, the most it may cost) in one atomic
limiter call and returns a ``Ticket``; ``Ticket.settle`` replaces the reservation by the actual usage and
records it, exactly once. A request's ``Charge`` is what the generation path holds: it admits on the first
attempt (a fallback's attempt re-targets the same ticket), counts usage as the work makes it, and settles once
however the request ends: done, failed, timed out, cancelled, client gone, or a stream that never started.
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
from portico.usage.tokens import NO_USAGE, TokenUsage

logger = logging.getLogger("portico.metering")


@dataclass(frozen=True, slots=True)
class Settlement:
    usage: TokenUsage
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
    """One admitted request's reservation, and its settlement once it has ended."""

    meter: Meter
    principal: Principal
    endpoint: str
    model: str
    pricing: PricingSettings
    reservation: Reservation | None
    request_id: str
    free: bool = False  # a cache hit: recorded with its tokens, charged no tokens and no cost
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    settlement: Settlement | None = None

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

    def cost_of(self, usage: TokenUsage) -> float:
        if self.free:
            return 0.0
        return cost_usd(
            self.pricing,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
        )

    def retarget(self, model: str, pricing: PricingSettings) -> None:
        """A fallback model takes over: its name and prices are what gets recorded and charged."""
        self.model, self.pricing = model, pricing

    def note_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def settle(
        self, usage: TokenUsage, *, status: int, cancelled: bool = False, outcome: str | None = None
    ) -> Settlement:
        """Charge the actual usage and record it; later calls return the first settlement unchanged.
        ``outcome`` says why it ended as it did when a content policy acted (the usage record's ``outcome``)."""
        if self.settlement is not None:
            return self.settlement
        cost = self.cost_of(usage)
        self.settlement = Settlement(usage, cost)
        now = time.perf_counter()
        self._publish(usage, status, now)
        if self.reservation is not None and self.reservation.enforced:
            self.meter.spawn(
                self.meter.limiter.settle(
                    self.reservation,
                    tokens=0 if self.free else usage.total_tokens,
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
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                cost_usd=cost,
                latency_ms=(now - self.started) * 1000,
                ttft_ms=None if self.first_token_at is None else (self.first_token_at - self.started) * 1000,
                status=status,
                cancelled=cancelled,
                outcome=outcome,
                created_at=wall,
                day=datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%d"),
            )
        )
        return self.settlement

    def _publish(self, usage: TokenUsage, status: int, now: float) -> None:
        """The settled usage into the metrics and the request's access log line."""
        metrics.observe_usage(
            endpoint=self.endpoint,
            model=self.model,
            status=status,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            seconds=now - self.started,
            first_token_s=None if self.first_token_at is None else self.first_token_at - self.started,
        )
        note_usage(
            self.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
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


# Called with the request's ticket once it is admitted: its settlement is the usage however the run ends.
OnAdmit = Callable[[Ticket], None]


class Charge:
    """What one request uses, from its admission to its settlement, whichever model or attempt answers it.

    The first ``admit`` reserves against the principal's limits; a later one (a fallback model taking over)
    re-targets the same ticket, so a request is one hit on the rate limits and one usage record. The work
    ``count``s its usage as it goes (a failed attempt's count is dropped by ``next_attempt``); ``settling`` is
    the one place a request's ending becomes a settlement.
    """

    def __init__(self, meter: Meter, principal: Principal, endpoint: str, on_admit: OnAdmit | None = None) -> None:
        self.meter = meter
        self.principal = principal
        self.endpoint = endpoint
        self.ticket: Ticket | None = None
        self._on_admit = on_admit
        self._used = NO_USAGE
        self._outcome: str | None = None

    @property
    def settlement(self) -> Settlement | None:
        return None if self.ticket is None else self.ticket.settlement

    async def admit(
        self, *, model: str, pricing: PricingSettings, prompt_tokens: int, max_completion_tokens: int
    ) -> Ticket:
        if self.ticket is None:
            ticket = await self.meter.admit(
                self.principal,
                endpoint=self.endpoint,
                model=model,
                pricing=pricing,
                prompt_tokens=prompt_tokens,
                max_completion_tokens=max_completion_tokens,
            )
            self._admitted(ticket)
        else:
            self.ticket.retarget(model, pricing)
        assert self.ticket is not None
        return self.ticket

    async def admit_free(self, *, model: str, pricing: PricingSettings, usage: TokenUsage) -> Ticket:
        """A cache hit: one request against the rate and concurrency limits, settled at once with ``usage``."""
        ticket = await self.meter.admit_free(self.principal, endpoint=self.endpoint, model=model, pricing=pricing)
        self._admitted(ticket)
        ticket.settle(usage, status=200)
        return ticket

    async def refuse(self, *, model: str, pricing: PricingSettings, outcome: str) -> None:
        """A request a content policy blocked before it ran: one request against the rate and concurrency
        limits, recorded with no tokens, status 400 and why (``outcome``)."""
        ticket = await self.meter.admit_free(self.principal, endpoint=self.endpoint, model=model, pricing=pricing)
        self._admitted(ticket)
        ticket.settle(NO_USAGE, status=400, outcome=outcome)

    def mark(self, outcome: str) -> None:
        """Why the request ends as it does (a content policy stopped or failed its output), for its record."""
        self._outcome = outcome

    def _admitted(self, ticket: Ticket) -> None:
        self.ticket = ticket
        if self._on_admit is not None:
            self._on_admit(ticket)

    def count(self, usage: TokenUsage) -> None:
        """The usage so far of the attempt under way: what a settlement now would charge."""
        self._used = usage

    @property
    def used(self) -> TokenUsage:
        """The usage counted so far (what a settlement now would charge)."""
        return self._used

    def first_token(self) -> None:
        if self.ticket is not None:
            self.ticket.note_first_token()

    def next_attempt(self) -> None:
        """A fallback takes over from a failed attempt, whose (partial) usage is not charged."""
        self._used = NO_USAGE

    def cost_of(self, usage: TokenUsage) -> float:
        return 0.0 if self.ticket is None else self.ticket.cost_of(usage)

    def headers(self) -> dict[str, str]:
        return {} if self.ticket is None else self.ticket.headers()

    def settle(self, *, status: int, cancelled: bool = False) -> None:
        """Settle with the usage counted so far (nothing to do before admission, or once settled)."""
        if self.ticket is not None:
            self.ticket.settle(self._used, status=status, cancelled=cancelled, outcome=self._outcome)

    @contextmanager
    def settling(self, *, only_failure: bool = False) -> Iterator[None]:
        """Settle however the block ends: status 200, the error's status, or 499 for a cancellation. With
        ``only_failure`` a block that succeeds leaves the charge open (a stream whose events settle it)."""
        status, cancelled = 500, False
        try:
            yield
            status = 200
        except PorticoError as exc:
            status = exc.status_code
            raise
        except (asyncio.CancelledError, GeneratorExit):
            status, cancelled = 499, True
            raise
        finally:
            if status != 200 or not only_failure:
                self.settle(status=status, cancelled=cancelled)
