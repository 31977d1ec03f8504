"""The in-process limiter: exact for one process, forgotten on restart.

Everything runs on the one event loop with no ``await`` between checking and charging, so each ``reserve`` is
atomic without a lock. The clock is injectable so tests can move time (refills, leases, window rollover).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from portico.limits import rules
from portico.limits.base import Demand, LimitPolicy, Reservation
from portico.limits.rules import SCALE, CalendarWindows, Charged


@dataclass(slots=True)
class _Bucket:
    level: int  # in rules.SCALE units; below zero when a request used more than it reserved
    at_us: int  # when ``level`` was computed


@dataclass(slots=True)
class _Subject:
    requests: _Bucket | None = None  # None: full
    tokens: _Bucket | None = None
    tokens_by_day: dict[str, int] = field(default_factory=dict)
    cost_by_day: dict[str, int] = field(default_factory=dict)
    cost_by_month: dict[str, int] = field(default_factory=dict)
    leases: dict[str, int] = field(default_factory=dict)  # lease id -> expiry (µs)
    unsettled: dict[str, int] = field(default_factory=dict)  # lease id -> last moment settle corrects it (µs)


class MemoryLimiter:
    def __init__(self, *, clock: Callable[[], float] = time.time, lease_s: float = 900.0) -> None:
        self._clock = clock
        self._lease_us = round(lease_s * 1e6)
        self._subjects: dict[str, _Subject] = {}

    async def reserve(self, demand: Demand, policy: LimitPolicy) -> Reservation:
        rules.refuse_impossible(demand, policy)
        now = self._clock()
        now_us = round(now * 1e6)
        windows = rules.calendar_windows(now)
        if policy.unlimited:
            return Reservation(demand=demand, policy=policy, day=windows.day, month=windows.month)
        subject = self._subjects.setdefault(demand.subject, _Subject())
        requests_level, tokens_level = _check(subject, demand, policy, windows, now_us)
        charged = self._charge(subject, demand, policy, windows, now_us, requests_level, tokens_level)
        return rules.admitted(demand, policy, windows, charged)

    def _charge(
        self,
        subject: _Subject,
        demand: Demand,
        policy: LimitPolicy,
        windows: CalendarWindows,
        now_us: int,
        requests_level: int,
        tokens_level: int,
    ) -> Charged:
        requests_level -= SCALE
        tokens_level -= demand.tokens * SCALE
        if policy.requests_per_minute is not None:
            subject.requests = _Bucket(requests_level, now_us)
        if policy.tokens_per_minute is not None:
            subject.tokens = _Bucket(tokens_level, now_us)
        if policy.tokens_per_day is not None:
            subject.tokens_by_day[windows.day] += demand.tokens
        if policy.budget_per_day_usd is not None:
            subject.cost_by_day[windows.day] += demand.cost_micros
        if policy.budget_per_month_usd is not None:
            subject.cost_by_month[windows.month] += demand.cost_micros
        if policy.max_concurrent is not None:
            subject.leases[demand.lease_id] = now_us + self._lease_us
        if rules.needs_settling(policy):
            subject.unsettled[demand.lease_id] = now_us + rules.SETTLE_WITHIN_S * 1_000_000
        return Charged(
            requests_level=requests_level,
            tokens_level=tokens_level,
            tokens_today=subject.tokens_by_day.get(windows.day, 0),
            cost_today=subject.cost_by_day.get(windows.day, 0),
            cost_month=subject.cost_by_month.get(windows.month, 0),
        )

    async def settle(self, reservation: Reservation, *, tokens: int, cost_micros: int) -> None:
        demand, policy = reservation.demand, reservation.policy
        subject = self._subjects.get(demand.subject)
        if not reservation.enforced or subject is None:
            return
        subject.leases.pop(demand.lease_id, None)
        if subject.unsettled.pop(demand.lease_id, None) is None:
            return  # settled before, or too late to correct
        if (tpm := policy.tokens_per_minute) is not None:
            now_us = round(self._clock() * 1e6)
            refunded = _refilled(subject.tokens, tpm, tpm, now_us) + (demand.tokens - tokens) * SCALE
            subject.tokens = _Bucket(min(refunded, tpm * SCALE), now_us)
        if policy.tokens_per_day is not None:
            _correct(subject.tokens_by_day, reservation.day, tokens - demand.tokens)
        if policy.budget_per_day_usd is not None:
            _correct(subject.cost_by_day, reservation.day, cost_micros - demand.cost_micros)
        if policy.budget_per_month_usd is not None:
            _correct(subject.cost_by_month, reservation.month, cost_micros - demand.cost_micros)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._subjects.clear()


def _check(
    subject: _Subject, demand: Demand, policy: LimitPolicy, windows: CalendarWindows, now_us: int
) -> tuple[int, int]:
    """Raise for the first limit (in the documented order) that does not admit ``demand``; else the request and
    token bucket levels before charging."""
    if policy.max_concurrent is not None:
        _forget_expired(subject.leases, now_us)
        if len(subject.leases) >= policy.max_concurrent:
            raise rules.concurrency_limited(policy)
    _forget_expired(subject.unsettled, now_us)
    requests_level = tokens_level = 0
    if (rpm := policy.requests_per_minute) is not None:
        requests_level = _refilled(subject.requests, rules.request_capacity(policy), rpm, now_us)
        if requests_level < SCALE:
            raise rules.requests_limited(policy, rules.wait_s(SCALE - requests_level, rpm))
    if (tpm := policy.tokens_per_minute) is not None:
        tokens_level = _refilled(subject.tokens, tpm, tpm, now_us)
        if tokens_level < demand.tokens * SCALE:
            raise rules.tokens_limited(policy, demand, rules.wait_s(demand.tokens * SCALE - tokens_level, tpm))
    if policy.tokens_per_day is not None:
        used = _window_total(subject.tokens_by_day, windows.day)
        if used + demand.tokens > policy.tokens_per_day:
            raise rules.daily_tokens_exhausted(policy, demand, used, windows)
    for counts, window, usd, monthly in (
        (subject.cost_by_month, windows.month, policy.budget_per_month_usd, True),
        (subject.cost_by_day, windows.day, policy.budget_per_day_usd, False),
    ):
        limit = rules.budget_micros(usd)
        if limit is not None and (used := _window_total(counts, window)) + demand.cost_micros > limit:
            raise rules.budget_exhausted(policy, demand, used, windows, monthly=monthly)
    return requests_level, tokens_level


def _refilled(bucket: _Bucket | None, capacity: int, refill_per_us: int, now_us: int) -> int:
    full = capacity * SCALE
    if bucket is None:
        return full
    return min(full, bucket.level + max(0, now_us - bucket.at_us) * refill_per_us)


def _forget_expired(deadlines: dict[str, int], now_us: int) -> None:
    for key in [key for key, deadline in deadlines.items() if deadline <= now_us]:
        del deadlines[key]


def _window_total(totals: dict[str, int], window: str) -> int:
    """The total of ``window``. Opening a new window forgets all but the latest earlier one, where requests
    reserved before the rollover still settle."""
    if window not in totals:
        for old in sorted(totals)[:-1]:
            del totals[old]
        totals[window] = 0
    return totals[window]


def _correct(totals: dict[str, int], window: str, delta: int) -> None:
    if window in totals:
        totals[window] = max(0, totals[window] + delta)
