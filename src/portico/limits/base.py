"""The limiter interface: one atomic check-and-reserve per request for every limit, then one settlement.

A request reserves before any work starts: one request against the request rate, its prompt tokens plus the
most it may generate against the token limits, the most it may cost against the budgets, and one lease
against the concurrency limit. Either every limit admits it and all are charged together, or none is charged
and ``reserve`` raises the ``RateLimited`` subclass of the first limit that tripped. When the request ends
(finished, failed, cancelled or disconnected) ``settle`` replaces the reservation by the actual tokens and
cost, and releases the lease.

Windows: requests and tokens per minute are continuous (GCRA / token bucket, refilling at limit/60 per
second); tokens per day and the budgets are calendar windows in UTC (day ``YYYY-MM-DD``, month ``YYYY-MM``),
fixed at reservation so a request settles into the window that it was charged to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class LimitName(StrEnum):
    """The limits of a key; the value is also the 429 error's ``code``."""

    REQUESTS_PER_MINUTE = "requests_per_minute"
    TOKENS_PER_MINUTE = "tokens_per_minute"
    TOKENS_PER_DAY = "tokens_per_day"
    CONCURRENCY = "concurrency"
    BUDGET = "budget"  # per day or per month, whichever trips first


class FailurePolicy(StrEnum):
    """What the Redis limiter does while Redis is unreachable (logged either way)."""

    OPEN = "open"  # admit without limits
    CLOSED = "closed"  # refuse with 503 limits_unavailable


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """A key's effective limits; ``None`` means unlimited."""

    requests_per_minute: int | None = None
    request_burst: int | None = None  # requests allowed at once; default: requests_per_minute
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    max_concurrent: int | None = None
    budget_per_day_usd: float | None = None
    budget_per_month_usd: float | None = None

    @property
    def unlimited(self) -> bool:
        return all(
            value is None
            for value in (
                self.requests_per_minute,
                self.tokens_per_minute,
                self.tokens_per_day,
                self.max_concurrent,
                self.budget_per_day_usd,
                self.budget_per_month_usd,
            )
        )


@dataclass(frozen=True, slots=True)
class Demand:
    """What one request asks for. Cost is in micro-USD (integers add up exactly, in Redis too)."""

    subject: str  # whose limits: the API key id
    lease_id: str  # unique per request (its request id): the concurrency lease
    tokens: int  # prompt tokens + the most the request may generate
    cost_micros: int  # the most it may cost


@dataclass(frozen=True, slots=True)
class QuotaWarning:
    """A daily quota or a budget crossed 80% or 90% of its limit with this request's reservation."""

    limit: str  # "tokens_per_day" | "budget_per_day" | "budget_per_month"
    threshold: int  # 80 or 90 (the highest crossed)
    used_fraction: float  # used + reserved, over the limit

    def header_value(self) -> str:
        return f"{self.limit}={self.threshold}%"


@dataclass(frozen=True, slots=True)
class RateState:
    """A continuous limit's state after this reservation, for the x-ratelimit-* headers."""

    limit: int
    remaining: int  # how many more could pass right now
    reset_s: float  # seconds until the limit is fully replenished


@dataclass(frozen=True, slots=True)
class Reservation:
    demand: Demand
    policy: LimitPolicy
    day: str  # the UTC day window charged, YYYY-MM-DD
    month: str  # the UTC month window charged, YYYY-MM
    requests: RateState | None = None  # None: no request-rate limit
    tokens: RateState | None = None  # None: no token-rate limit
    warnings: tuple[QuotaWarning, ...] = field(default=())
    enforced: bool = True  # False when admitted without checks (Redis unreachable, fail-open)


class Limiter(Protocol):
    async def reserve(self, demand: Demand, policy: LimitPolicy) -> Reservation:
        """Check every limit of ``policy`` and charge ``demand`` to all of them, atomically.

        Raises the ``portico.errors.RateLimited`` subclass of the limit that tripped, with ``retry_after``
        (seconds until the same demand could pass), or ``LimitsUnavailable`` (fail-closed backend down).
        """
        ...

    async def settle(self, reservation: Reservation, *, tokens: int, cost_micros: int) -> None:
        """Replace the reservation's tokens and cost by the actual ones; release its concurrency lease.

        Never raises: a backend failure is logged (the reservation then stands, which errs on the safe side).
        """
        ...

    async def ping(self) -> None:
        """Raise ``LimitsUnavailable`` when the backend cannot be reached (for /readyz)."""
        ...

    async def close(self) -> None: ...
