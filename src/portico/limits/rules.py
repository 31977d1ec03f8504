"""What both limiters share: bucket units, UTC calendar windows, and the error or warnings each limit produces.

The backends differ only in where the numbers live (a dict, or Redis behind one Lua script); the arithmetic of
the continuous limits is the same in both, and everything a client sees is built here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from portico.errors import (
    BudgetExhausted,
    ConcurrencyLimited,
    DailyTokensExhausted,
    RateLimited,
    RequestRateLimited,
    TokenRateLimited,
)
from portico.limits.base import Demand, LimitPolicy, QuotaWarning, RateState, Reservation

# The continuous limits are buckets kept in exact integers: one request or token is SCALE units, and a limit of
# N per minute refills N units a microsecond (N * SCALE units a minute). Integers keep "admits exactly N" exact
# where floats of Unix-epoch microseconds would drift; redis.py's Lua uses the same number.
SCALE = 60_000_000
MICROS_PER_USD = 1_000_000

# A reservation settled later than this stands as reserved (its correction is forgotten, erring on the safe side).
SETTLE_WITHIN_S = 2 * 86_400

# A full slot frees when some request finishes, which we cannot foresee; clients poll at this pace.
CONCURRENCY_RETRY_S = 1.0

_WARNING_THRESHOLDS = (90, 80)  # highest first: only the highest crossed is reported


@dataclass(frozen=True, slots=True)
class CalendarWindows:
    day: str  # YYYY-MM-DD, UTC
    month: str  # YYYY-MM, UTC
    day_ends_in_s: float  # until the next UTC midnight
    month_ends_in_s: float  # until 00:00 UTC on the first of next month


def calendar_windows(now: float) -> CalendarWindows:
    moment = datetime.fromtimestamp(now, UTC)
    next_day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)
    next_month = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return CalendarWindows(
        day=moment.strftime("%Y-%m-%d"),
        month=moment.strftime("%Y-%m"),
        day_ends_in_s=next_day.timestamp() - now,
        month_ends_in_s=next_month.timestamp() - now,
    )


def request_capacity(policy: LimitPolicy) -> int:
    """How many requests may pass at once: the burst, by default the per-minute limit."""
    if policy.request_burst is not None:
        return policy.request_burst
    return policy.requests_per_minute or 0


def needs_settling(policy: LimitPolicy) -> bool:
    """Whether settle has a correction to make for this policy (a lease alone is simply released)."""
    return any(
        limit is not None
        for limit in (
            policy.tokens_per_minute,
            policy.tokens_per_day,
            policy.budget_per_day_usd,
            policy.budget_per_month_usd,
        )
    )


def budget_micros(usd: float | None) -> int | None:
    return None if usd is None else round(usd * MICROS_PER_USD)


def wait_s(missing_units: int, refill_per_us: int) -> float:
    """Seconds until a bucket refilling ``refill_per_us`` units a microsecond has ``missing_units`` more."""
    return max(0, missing_units) / refill_per_us / 1e6


def rate_state(limit: int, capacity: int, refill_per_us: int, level: int) -> RateState:
    return RateState(
        limit=limit,
        remaining=max(0, level // SCALE),
        reset_s=wait_s(capacity * SCALE - level, refill_per_us),
    )


@dataclass(frozen=True, slots=True)
class Charged:
    """A subject's state right after a demand was charged: bucket levels in SCALE units, window totals."""

    requests_level: int
    tokens_level: int
    tokens_today: int
    cost_today: int
    cost_month: int


def admitted(demand: Demand, policy: LimitPolicy, windows: CalendarWindows, charged: Charged) -> Reservation:
    requests = tokens = None
    if policy.requests_per_minute is not None:
        rpm = policy.requests_per_minute
        requests = rate_state(rpm, request_capacity(policy), rpm, charged.requests_level)
    if policy.tokens_per_minute is not None:
        tpm = policy.tokens_per_minute
        tokens = rate_state(tpm, tpm, tpm, charged.tokens_level)
    used_and_limits = (
        ("tokens_per_day", charged.tokens_today, policy.tokens_per_day),
        ("budget_per_day", charged.cost_today, budget_micros(policy.budget_per_day_usd)),
        ("budget_per_month", charged.cost_month, budget_micros(policy.budget_per_month_usd)),
    )
    warnings = tuple(
        warning
        for name, used, limit in used_and_limits
        if limit is not None and (warning := quota_warning(name, used, limit)) is not None
    )
    return Reservation(
        demand=demand,
        policy=policy,
        day=windows.day,
        month=windows.month,
        requests=requests,
        tokens=tokens,
        warnings=warnings,
    )


def quota_warning(name: str, used: int, limit: int) -> QuotaWarning | None:
    fraction = used / limit if limit > 0 else 1.0
    for threshold in _WARNING_THRESHOLDS:
        if fraction * 100 >= threshold:
            return QuotaWarning(limit=name, threshold=threshold, used_fraction=fraction)
    return None


def refuse_impossible(demand: Demand, policy: LimitPolicy) -> None:
    """Raise when a limit could never admit this demand, however long the client waited (no retry_after)."""
    tpm, tpd = policy.tokens_per_minute, policy.tokens_per_day
    if tpm is not None and demand.tokens > tpm:
        raise TokenRateLimited(
            f"This request reserves {demand.tokens:,} tokens (its prompt plus max_tokens), more than this API "
            f"key's limit of {tpm:,} tokens per minute, so it can never pass. Lower max_tokens or shorten the prompt.",
            retry_after=None,
        )
    if tpd is not None and demand.tokens > tpd:
        raise DailyTokensExhausted(
            f"This request reserves {demand.tokens:,} tokens (its prompt plus max_tokens), more than this API "
            f"key's limit of {tpd:,} tokens per day, so it can never pass. Lower max_tokens or shorten the prompt.",
            retry_after=None,
        )
    for usd, period in ((policy.budget_per_day_usd, "day"), (policy.budget_per_month_usd, "month")):
        limit = budget_micros(usd)
        if limit is not None and demand.cost_micros > limit:
            raise BudgetExhausted(
                f"This request may cost up to {format_usd(demand.cost_micros)}, more than this API key's budget "
                f"of {format_usd(limit)} per {period}, so it can never pass. Lower max_tokens or shorten the prompt.",
                retry_after=None,
            )


def concurrency_limited(policy: LimitPolicy) -> RateLimited:
    return ConcurrencyLimited(
        f"Concurrency limit reached: {policy.max_concurrent:,} requests at a time for this API key. "
        f"Retry in {format_wait(CONCURRENCY_RETRY_S)}, or when one of them has finished.",
        retry_after=CONCURRENCY_RETRY_S,
    )


def requests_limited(policy: LimitPolicy, retry_after: float) -> RateLimited:
    rate = f"{policy.requests_per_minute:,} requests per minute"
    if policy.request_burst is not None and policy.request_burst != policy.requests_per_minute:
        rate += f" (at most {policy.request_burst:,} at once)"
    return RequestRateLimited(
        f"Rate limit reached: {rate} for this API key. Retry in {format_wait(retry_after)}.",
        retry_after=retry_after,
    )


def tokens_limited(policy: LimitPolicy, demand: Demand, retry_after: float) -> RateLimited:
    return TokenRateLimited(
        f"Rate limit reached: {policy.tokens_per_minute:,} tokens per minute for this API key, and this request "
        f"reserves {demand.tokens:,} (its prompt plus max_tokens). Retry in {format_wait(retry_after)}, "
        "or lower max_tokens.",
        retry_after=retry_after,
    )


def daily_tokens_exhausted(policy: LimitPolicy, demand: Demand, used: int, windows: CalendarWindows) -> RateLimited:
    return DailyTokensExhausted(
        f"Daily token limit reached: {policy.tokens_per_day:,} tokens per day (UTC) for this API key; {used:,} are "
        f"used or reserved and this request reserves {demand.tokens:,}. Retry after midnight UTC "
        f"(in {format_wait(windows.day_ends_in_s)}), or lower max_tokens.",
        retry_after=windows.day_ends_in_s,
    )


def budget_exhausted(
    policy: LimitPolicy, demand: Demand, used: int, windows: CalendarWindows, *, monthly: bool
) -> RateLimited:
    if monthly:
        limit, period, retry_after = policy.budget_per_month_usd, "month", windows.month_ends_in_s
        when = "on the first of next month (UTC)"
    else:
        limit, period, retry_after = policy.budget_per_day_usd, "day", windows.day_ends_in_s
        when = "after midnight UTC"
    return BudgetExhausted(
        f"Budget exhausted: {format_usd(budget_micros(limit) or 0)} per {period} for this API key; "
        f"{format_usd(used)} is spent or reserved and this request may cost up to {format_usd(demand.cost_micros)}. "
        f"Retry {when} (in {format_wait(retry_after)}), or ask an administrator to raise the budget.",
        retry_after=retry_after,
    )


def format_usd(micros: int) -> str:
    if micros % 10_000 == 0:
        return f"${micros / MICROS_PER_USD:,.2f}"
    return f"${micros / MICROS_PER_USD:,.6f}".rstrip("0")


def format_wait(seconds: float) -> str:
    """A wait as people say it: "2 s", "5 min", "3 h 20 min", "12 days" (rounded up, never "0 s")."""
    whole = max(1, math.ceil(seconds))
    if whole < 90:
        return f"{whole} s"
    minutes = math.ceil(whole / 60)
    if minutes < 90:
        return f"{minutes} min"
    if minutes < 48 * 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{math.ceil(minutes / 1440)} days"
