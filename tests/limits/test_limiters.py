"""The limiter contract, run against both backends: what a client sees as it uses up each limit.

Limits are small (10 tokens a minute refill one token every 6 s) so the real time a Redis test takes never
refills a unit; the memory backend runs on a fake clock, and time moves only where a test says so.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from portico.errors import (
    BudgetExhausted,
    ConcurrencyLimited,
    DailyTokensExhausted,
    RateLimited,
    RequestRateLimited,
    TokenRateLimited,
)
from portico.limits.base import Demand, FailurePolicy, Limiter, LimitPolicy, QuotaWarning, Reservation
from portico.limits.memory import MemoryLimiter
from portico.limits.redis import RedisLimiter

NOON = datetime(2026, 3, 14, 12, 0, tzinfo=UTC).timestamp()
HALF_DAY_S = 12 * 3600.0
TO_APRIL_S = (datetime(2026, 4, 1, tzinfo=UTC) - datetime(2026, 3, 14, 12, 0, tzinfo=UTC)).total_seconds()


class Harness:
    """A backend's limiter and the time it sees: ``jump_to`` sets the calendar (UTC day and month windows),
    ``sleep`` lets time pass (on the fake clock for memory, for real for Redis, whose rates run on its own clock)."""

    def __init__(self, backend: str, redis_client: Redis | None = None, prefix: str = "") -> None:
        self.backend = backend
        self._redis, self._prefix = redis_client, prefix
        self._fake_now = NOON  # memory: the whole clock
        self._offset = NOON - time.time()  # Redis: the calendar clock, relative to real time
        # Seconds of real time a Redis test may take between the limiter's clock and the assertion.
        self.slack = 0.0 if backend == "memory" else 1.0
        self.limiter = self.new_limiter()

    def clock(self) -> float:
        return self._fake_now if self.backend == "memory" else time.time() + self._offset

    def new_limiter(self, *, lease_s: float = 900.0) -> Limiter:
        if self._redis is None:
            return MemoryLimiter(clock=self.clock, lease_s=lease_s)
        return RedisLimiter(
            self._redis, on_error=FailurePolicy.CLOSED, lease_s=lease_s, prefix=self._prefix, clock=self.clock
        )

    def jump_to(self, moment: datetime) -> None:
        self._fake_now = moment.timestamp()
        self._offset = moment.timestamp() - time.time()

    async def sleep(self, seconds: float) -> None:
        if self.backend == "memory":
            self._fake_now += seconds
        else:
            await asyncio.sleep(seconds)

    def assert_wait(self, error: RateLimited, expected_s: float) -> None:
        """``retry_after`` is the wait from when the limiter looked; the test may have run a little since."""
        assert error.retry_after is not None
        assert expected_s - self.slack - 1e-6 <= error.retry_after <= expected_s + 1e-6


@pytest.fixture(params=["memory", "redis"])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "memory":
        return Harness("memory")
    return Harness("redis", request.getfixturevalue("redis_client"), request.getfixturevalue("redis_prefix"))


def ask(tokens: int = 0, cost_micros: int = 0, *, subject: str = "key_a") -> Demand:
    return Demand(subject=subject, lease_id=f"req_{uuid4().hex}", tokens=tokens, cost_micros=cost_micros)


async def admit_all(limiter: Limiter, policy: LimitPolicy, *demands: Demand) -> list[Reservation]:
    return [await limiter.reserve(demand, policy) for demand in demands]


def warning_of(reservation: Reservation, limit: str) -> QuotaWarning | None:
    return next((warning for warning in reservation.warnings if warning.limit == limit), None)


# Each limit admits exactly its limit and refuses the next one, saying which limit and when to retry.


async def test_requests_per_minute_admit_exactly_the_limit(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_minute=5)
    await admit_all(harness.limiter, policy, *(ask() for _ in range(5)))

    with pytest.raises(RequestRateLimited) as refused:
        await harness.limiter.reserve(ask(), policy)

    assert refused.value.code == "requests_per_minute"
    assert refused.value.status_code == 429
    harness.assert_wait(refused.value, 12.0)  # one request refills every 60/5 s
    assert "5 requests per minute" in refused.value.message
    assert "Retry in 12 s" in refused.value.message


async def test_request_burst_caps_requests_at_once(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_minute=60, request_burst=3)
    await admit_all(harness.limiter, policy, *(ask() for _ in range(3)))

    with pytest.raises(RequestRateLimited) as refused:
        await harness.limiter.reserve(ask(), policy)

    harness.assert_wait(refused.value, 1.0)
    assert "at most 3 at once" in refused.value.message


async def test_a_refused_request_passes_after_retry_after(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_minute=600, request_burst=1)  # one request every 0.1 s
    await harness.limiter.reserve(ask(), policy)
    with pytest.raises(RequestRateLimited) as refused:
        await harness.limiter.reserve(ask(), policy)
    assert refused.value.retry_after is not None

    await harness.sleep(refused.value.retry_after)

    await harness.limiter.reserve(ask(), policy)


async def test_tokens_per_minute_admit_exactly_the_limit(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_minute=10)
    await admit_all(harness.limiter, policy, ask(6), ask(4))

    with pytest.raises(TokenRateLimited) as refused:
        await harness.limiter.reserve(ask(2), policy)

    assert refused.value.code == "tokens_per_minute"
    harness.assert_wait(refused.value, 12.0)  # 2 tokens at 10 a minute
    assert "10 tokens per minute" in refused.value.message


async def test_tokens_refill_continuously() -> None:
    harness = Harness("memory")  # seconds of refill: on the fake clock only
    policy = LimitPolicy(tokens_per_minute=10)
    await harness.limiter.reserve(ask(10), policy)

    await harness.sleep(30)

    reservation = await harness.limiter.reserve(ask(5), policy)
    assert reservation.tokens is not None
    assert reservation.tokens.remaining == 0
    with pytest.raises(TokenRateLimited):
        await harness.limiter.reserve(ask(1), policy)


async def test_a_request_larger_than_the_token_rate_can_never_pass(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_minute=10)

    with pytest.raises(TokenRateLimited) as refused:
        await harness.limiter.reserve(ask(11), policy)

    assert refused.value.retry_after is None
    assert "lower max_tokens" in refused.value.message.lower()
    await harness.limiter.reserve(ask(10), policy)  # and nothing was charged


async def test_tokens_per_day_admit_exactly_the_limit(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_day=10)
    await admit_all(harness.limiter, policy, ask(7), ask(3))

    with pytest.raises(DailyTokensExhausted) as refused:
        await harness.limiter.reserve(ask(1), policy)

    assert refused.value.code == "tokens_per_day"
    harness.assert_wait(refused.value, HALF_DAY_S)  # until midnight UTC
    assert "10 tokens per day" in refused.value.message


async def test_tokens_per_day_start_afresh_at_utc_midnight(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_day=10)
    harness.jump_to(datetime(2026, 3, 14, 23, 59, 59, tzinfo=UTC))
    await harness.limiter.reserve(ask(10), policy)
    with pytest.raises(DailyTokensExhausted) as refused:
        await harness.limiter.reserve(ask(1), policy)
    harness.assert_wait(refused.value, 1.0)

    harness.jump_to(datetime(2026, 3, 15, 0, 0, 0, tzinfo=UTC))

    await harness.limiter.reserve(ask(10), policy)


async def test_a_reservation_settles_into_the_day_it_was_charged_to(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_day=10)
    harness.jump_to(datetime(2026, 3, 14, 23, 59, 59, tzinfo=UTC))
    yesterday = await harness.limiter.reserve(ask(10), policy)
    harness.jump_to(datetime(2026, 3, 15, 0, 0, 1, tzinfo=UTC))
    await harness.limiter.reserve(ask(10), policy)

    await harness.limiter.settle(yesterday, tokens=0, cost_micros=0)

    with pytest.raises(DailyTokensExhausted):  # yesterday's refund did not land in today
        await harness.limiter.reserve(ask(1), policy)


async def test_budget_per_day_admits_exactly_the_budget(harness: Harness) -> None:
    policy = LimitPolicy(budget_per_day_usd=0.0001)  # 100 micro-USD
    await admit_all(harness.limiter, policy, ask(cost_micros=60), ask(cost_micros=40))

    with pytest.raises(BudgetExhausted) as refused:
        await harness.limiter.reserve(ask(cost_micros=1), policy)

    assert refused.value.code == "budget"
    harness.assert_wait(refused.value, HALF_DAY_S)
    assert "$0.0001 per day" in refused.value.message


async def test_budget_per_month_waits_for_the_next_month(harness: Harness) -> None:
    policy = LimitPolicy(budget_per_day_usd=1.0, budget_per_month_usd=2.0)
    await harness.limiter.reserve(ask(cost_micros=1_000_000), policy)
    harness.jump_to(datetime(2026, 3, 15, 12, 0, tzinfo=UTC))
    await harness.limiter.reserve(ask(cost_micros=1_000_000), policy)
    harness.jump_to(datetime(2026, 3, 16, 12, 0, tzinfo=UTC))  # a fresh day, but the month is spent

    with pytest.raises(BudgetExhausted) as refused:
        await harness.limiter.reserve(ask(cost_micros=1), policy)

    harness.assert_wait(refused.value, TO_APRIL_S - 2 * 86_400)
    assert "$2.00 per month" in refused.value.message


async def test_max_concurrent_admits_exactly_the_limit_until_one_settles(harness: Harness) -> None:
    policy = LimitPolicy(max_concurrent=2)
    first, _ = await admit_all(harness.limiter, policy, ask(), ask())

    with pytest.raises(ConcurrencyLimited) as refused:
        await harness.limiter.reserve(ask(), policy)
    assert refused.value.code == "concurrency"
    assert refused.value.retry_after == 1.0
    assert "2 requests at a time" in refused.value.message

    await harness.limiter.settle(first, tokens=0, cost_micros=0)
    await harness.limiter.reserve(ask(), policy)


async def test_leases_of_requests_never_settled_expire(harness: Harness) -> None:
    limiter = harness.new_limiter(lease_s=0.2)
    policy = LimitPolicy(max_concurrent=1)
    await limiter.reserve(ask(), policy)  # its process "crashes": never settled
    with pytest.raises(ConcurrencyLimited):
        await limiter.reserve(ask(), policy)

    await harness.sleep(0.25)

    await limiter.reserve(ask(), policy)


async def test_subjects_have_separate_limits(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_minute=1, tokens_per_day=10, max_concurrent=1)
    await harness.limiter.reserve(ask(10, subject="key_a"), policy)

    await harness.limiter.reserve(ask(10, subject="key_b"), policy)


# The first limit that trips decides the error, and a refused request charges nothing.


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (LimitPolicy(max_concurrent=1, requests_per_minute=1), ConcurrencyLimited),
        (LimitPolicy(requests_per_minute=1, tokens_per_minute=10), RequestRateLimited),
        (LimitPolicy(tokens_per_minute=10, tokens_per_day=10), TokenRateLimited),
        (LimitPolicy(tokens_per_day=10, budget_per_day_usd=0.00001), DailyTokensExhausted),
    ],
)
async def test_the_first_limit_in_order_decides_the_error(
    harness: Harness, policy: LimitPolicy, expected: type[RateLimited]
) -> None:
    await harness.limiter.reserve(ask(10, cost_micros=10), policy)  # uses up both limits

    with pytest.raises(expected):
        await harness.limiter.reserve(ask(1, cost_micros=1), policy)


async def test_a_refusal_charges_none_of_the_other_limits(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_minute=5, tokens_per_minute=20, tokens_per_day=10, max_concurrent=3)
    await harness.limiter.reserve(ask(10), policy)
    with pytest.raises(DailyTokensExhausted):
        await harness.limiter.reserve(ask(1), policy)

    after = await harness.limiter.reserve(ask(0), policy)

    assert after.requests is not None and after.tokens is not None
    assert after.requests.remaining == 3  # two requests charged, not three
    assert after.tokens.remaining == 10  # the refused request's token was not taken
    with pytest.raises(ConcurrencyLimited):  # two leases held (not three): the third is the last one
        await admit_all(harness.limiter, policy, ask(0), ask(0))


async def test_a_concurrency_refusal_charges_no_request(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_minute=5, max_concurrent=1)
    first = await harness.limiter.reserve(ask(), policy)
    with pytest.raises(ConcurrencyLimited):
        await harness.limiter.reserve(ask(), policy)
    await harness.limiter.settle(first, tokens=0, cost_micros=0)

    after = await harness.limiter.reserve(ask(), policy)

    assert after.requests is not None
    assert after.requests.remaining == 3


# Settlement replaces the reservation by what the request really used.


@pytest.mark.parametrize(
    ("reserved", "used"),
    [
        (10, 4),  # finished early
        (8, 3),  # cancelled halfway: the prompt and a few generated tokens
        (6, 0),  # failed before any work
        (5, 7),  # used more than it reserved (the difference is charged)
    ],
)
async def test_settle_replaces_the_reserved_tokens_by_the_used_ones(harness: Harness, reserved: int, used: int) -> None:
    policy = LimitPolicy(tokens_per_minute=10, tokens_per_day=10)
    reservation = await harness.limiter.reserve(ask(reserved), policy)

    await harness.limiter.settle(reservation, tokens=used, cost_micros=0)

    rest = await harness.limiter.reserve(ask(10 - used), policy)
    assert rest.tokens is not None
    assert rest.tokens.remaining == 0  # the per-minute bucket holds exactly 10 - used
    day = warning_of(rest, "tokens_per_day")
    assert day is not None and day.used_fraction == 1.0  # the day holds exactly used + (10 - used)
    with pytest.raises(TokenRateLimited):
        await harness.limiter.reserve(ask(1), policy)


async def test_settle_replaces_the_reserved_cost_by_the_real_one(harness: Harness) -> None:
    policy = LimitPolicy(budget_per_day_usd=0.0001, budget_per_month_usd=0.0001)
    reservation = await harness.limiter.reserve(ask(cost_micros=100), policy)

    await harness.limiter.settle(reservation, tokens=0, cost_micros=30)

    await harness.limiter.reserve(ask(cost_micros=70), policy)
    with pytest.raises(BudgetExhausted):
        await harness.limiter.reserve(ask(cost_micros=1), policy)


async def test_settling_twice_refunds_once(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_minute=10, tokens_per_day=10, budget_per_day_usd=0.00001)
    reservation = await harness.limiter.reserve(ask(10, cost_micros=10), policy)

    await harness.limiter.settle(reservation, tokens=6, cost_micros=6)
    await harness.limiter.settle(reservation, tokens=6, cost_micros=6)

    rest = await harness.limiter.reserve(ask(4, cost_micros=4), policy)
    assert rest.tokens is not None and rest.tokens.remaining == 0
    assert [(w.limit, w.used_fraction) for w in rest.warnings] == [("tokens_per_day", 1.0), ("budget_per_day", 1.0)]


async def test_settling_after_the_lease_expired_still_corrects_once(harness: Harness) -> None:
    limiter = harness.new_limiter(lease_s=0.2)
    policy = LimitPolicy(max_concurrent=1, tokens_per_day=10)
    slow = await limiter.reserve(ask(10), policy)
    await harness.sleep(0.25)
    await limiter.reserve(ask(0), policy)  # takes the expired lease's slot

    await limiter.settle(slow, tokens=4, cost_micros=0)
    await limiter.settle(slow, tokens=4, cost_micros=0)

    with pytest.raises(ConcurrencyLimited):  # the second request still holds its lease
        await limiter.reserve(ask(0), policy)
    rest = await limiter.reserve(ask(6), LimitPolicy(tokens_per_day=10))
    day = warning_of(rest, "tokens_per_day")
    assert day is not None and day.used_fraction == 1.0


async def test_an_unenforced_reservation_settles_nothing(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_day=10, max_concurrent=1)
    reservation = await harness.limiter.reserve(ask(10), policy)

    await harness.limiter.settle(replace(reservation, enforced=False), tokens=0, cost_micros=0)

    with pytest.raises(ConcurrencyLimited):
        await harness.limiter.reserve(ask(0), policy)


# What the response headers are built from.


async def test_rate_state_after_a_reservation(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_minute=5, tokens_per_minute=10)

    reservation = await harness.limiter.reserve(ask(4), policy)

    assert reservation.requests is not None and reservation.tokens is not None
    assert (reservation.requests.limit, reservation.requests.remaining) == (5, 4)
    assert 12.0 - harness.slack <= reservation.requests.reset_s <= 12.0  # one request refills in 12 s
    assert (reservation.tokens.limit, reservation.tokens.remaining) == (10, 6)
    assert 24.0 - harness.slack <= reservation.tokens.reset_s <= 24.0  # four tokens refill in 24 s
    assert (reservation.day, reservation.month) == ("2026-03-14", "2026-03")
    assert reservation.enforced


async def test_no_limits_reserve_without_state(harness: Harness) -> None:
    reservation = await harness.limiter.reserve(ask(10**6, cost_micros=10**9), LimitPolicy())

    assert (reservation.requests, reservation.tokens, reservation.warnings) == (None, None, ())
    await harness.limiter.settle(reservation, tokens=5, cost_micros=5)


async def test_quota_warnings_at_80_and_90_percent(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_day=10, budget_per_day_usd=0.00001, budget_per_month_usd=0.00002)

    quiet = await harness.limiter.reserve(ask(7, cost_micros=7), policy)
    at_80 = await harness.limiter.reserve(ask(1, cost_micros=1), policy)
    at_90 = await harness.limiter.reserve(ask(1, cost_micros=1), policy)

    assert quiet.warnings == ()
    assert [w.header_value() for w in at_80.warnings] == ["tokens_per_day=80%", "budget_per_day=80%"]
    assert [w.header_value() for w in at_90.warnings] == ["tokens_per_day=90%", "budget_per_day=90%"]
    assert warning_of(at_90, "tokens_per_day") == QuotaWarning("tokens_per_day", 90, 0.9)
