"""The Redis limiter: exact across any number of processes and hosts.

Each ``reserve`` and each ``settle`` is one Lua script, which Redis runs atomically. The continuous limits and
lease expiry use the Redis server's clock (``TIME``), so hosts with skewed clocks agree; the calendar windows
come from this host's clock and are part of the key names, so a request settles into the window it was charged
to. All of a subject's keys share the hash tag ``{subject}`` (one cluster slot), and every key expires.

Keys, under the prefix: ``{subject}:rpm`` and ``{subject}:tpm`` (hashes: bucket ``level`` in ``rules.SCALE``
units and the ``at`` microsecond it was computed), ``{subject}:tpd:<day>``, ``{subject}:usd:<day>`` and
``{subject}:usd:<month>`` (integer totals; cost in micro-USD), ``{subject}:leases`` (sorted set: lease id by
expiry) and ``{subject}:unsettled`` (sorted set: reservations settle has yet to correct, by deadline).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError, ResponseError

from portico.constants import REDIS_PREFIX_LIMITS
from portico.errors import LimitsUnavailable
from portico.limits import rules
from portico.limits.base import Demand, FailurePolicy, LimitPolicy, Reservation

logger = logging.getLogger("portico.limits")

DAY_KEY_TTL_S = 2 * 86_400
MONTH_KEY_TTL_S = 32 * 86_400
OUTAGE_LOG_INTERVAL_S = 10.0
UNAVAILABLE_RETRY_S = 1.0
_NONE = -1  # a limit the policy does not set

# Shared by both scripts. Numbers above 1e14 must be formatted explicitly: Lua's tostring keeps 14 digits.
_LUA_COMMON = """
local SCALE = 60000000  -- rules.SCALE

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(x)
  return string.format('%.0f', x)
end

-- A bucket's level at `now`, refilled by `rate` units a microsecond up to capacity * SCALE; a missing key is full.
local function level_of(key, capacity, rate, now)
  local full = capacity * SCALE
  local state = redis.call('HMGET', key, 'level', 'at')
  if not state[1] then
    return full
  end
  local level = tonumber(state[1])
  local elapsed = now - tonumber(state[2])
  if elapsed > 0 then
    if elapsed >= (full - level) / rate then
      return full
    end
    level = level + elapsed * rate
  end
  return math.min(level, full)
end

-- Keep the key a little longer than it takes to refill: once gone, the bucket reads as full.
local function save_level(key, capacity, rate, level, now)
  redis.call('HSET', key, 'level', int(level), 'at', int(now))
  redis.call('PEXPIRE', key, int(math.ceil((capacity * SCALE - level) / rate / 1000) + 1000))
end
"""

# KEYS: rpm, tpm, tpd day, usd day, usd month, leases, unsettled.
# ARGV: request capacity, rpm, tpm, tpd, budget day, budget month, max concurrent (-1 = not limited), tokens, cost,
#       lease id, lease µs, settle-within µs (0: nothing to settle), day key ttl s, month key ttl s.
# Returns {0, requests level, tokens level, tokens today, cost today, cost month} when charged, else
# {1} concurrency, {2, wait µs} requests, {3, wait µs} tokens, {4, used} tokens per day, {5, used} budget per day,
# {6, used} budget per month: the first limit, in this order, that does not admit the demand. Nothing is charged
# unless every limit admits.
_RESERVE = (
    _LUA_COMMON
    + """
local capacity, rpm, tpm, tpd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local budget_day, budget_month, max_concurrent = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local tokens, cost, lease_id, lease_us = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11])
local settle_within_us, day_ttl, month_ttl = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local now = now_us()

if max_concurrent >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', int(now))
  if redis.call('ZCARD', KEYS[6]) >= max_concurrent then
    return {1}
  end
end
local requests_level, tokens_level = 0, 0
if rpm >= 0 then
  requests_level = level_of(KEYS[1], capacity, rpm, now)
  if requests_level < SCALE then
    return {2, int(math.ceil((SCALE - requests_level) / rpm))}
  end
end
if tpm >= 0 then
  tokens_level = level_of(KEYS[2], tpm, tpm, now)
  if tokens_level < tokens * SCALE then
    return {3, int(math.ceil((tokens * SCALE - tokens_level) / tpm))}
  end
end
local tokens_today = 0
if tpd >= 0 then
  tokens_today = tonumber(redis.call('GET', KEYS[3]) or 0)
  if tokens_today + tokens > tpd then
    return {4, tokens_today}
  end
end
local cost_today, cost_month = 0, 0
if budget_month >= 0 then
  cost_month = tonumber(redis.call('GET', KEYS[5]) or 0)
  if cost_month + cost > budget_month then
    return {6, cost_month}
  end
end
if budget_day >= 0 then
  cost_today = tonumber(redis.call('GET', KEYS[4]) or 0)
  if cost_today + cost > budget_day then
    return {5, cost_today}
  end
end

requests_level = requests_level - SCALE
tokens_level = tokens_level - tokens * SCALE
if rpm >= 0 then
  save_level(KEYS[1], capacity, rpm, requests_level, now)
end
if tpm >= 0 then
  save_level(KEYS[2], tpm, tpm, tokens_level, now)
end
if tpd >= 0 then
  tokens_today = redis.call('INCRBY', KEYS[3], tokens)
  redis.call('EXPIRE', KEYS[3], day_ttl)
end
if budget_day >= 0 then
  cost_today = redis.call('INCRBY', KEYS[4], cost)
  redis.call('EXPIRE', KEYS[4], day_ttl)
end
if budget_month >= 0 then
  cost_month = redis.call('INCRBY', KEYS[5], cost)
  redis.call('EXPIRE', KEYS[5], month_ttl)
end
if max_concurrent >= 0 then
  redis.call('ZADD', KEYS[6], int(now + lease_us), lease_id)
  redis.call('PEXPIRE', KEYS[6], int(math.ceil(lease_us / 1000) + 1000))
end
if settle_within_us > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', int(now))
  redis.call('ZADD', KEYS[7], int(now + settle_within_us), lease_id)
  redis.call('PEXPIRE', KEYS[7], int(math.ceil(settle_within_us / 1000) + 1000))
end
return {0, int(requests_level), int(tokens_level), tokens_today, cost_today, cost_month}
"""
)

# KEYS: tpm, tpd day, usd day, usd month, leases, unsettled.
# ARGV: tpm (-1 = not limited), tokens reserved minus used, tpd limited (1/0), cost used minus reserved,
#       budget day limited (1/0), budget month limited (1/0), lease id.
# Releases the lease; corrects the rest only if the reservation was still unsettled, so it happens once.
_SETTLE = (
    _LUA_COMMON
    + """
local tpm, refund, tpd, cost_delta = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', tonumber(ARGV[4])
local budget_day, budget_month, lease_id = ARGV[5] == '1', ARGV[6] == '1', ARGV[7]

local function add_to_total(key, delta)
  if delta ~= 0 and redis.call('EXISTS', key) == 1 then
    if redis.call('INCRBY', key, delta) < 0 then
      redis.call('SET', key, 0, 'KEEPTTL')
    end
  end
end

redis.call('ZREM', KEYS[5], lease_id)
if redis.call('ZREM', KEYS[6], lease_id) == 0 then
  return 0
end
if tpm >= 0 and refund ~= 0 then
  local now = now_us()
  local level = math.min(level_of(KEYS[1], tpm, tpm, now) + refund * SCALE, tpm * SCALE)
  save_level(KEYS[1], tpm, tpm, level, now)
end
if tpd then
  add_to_total(KEYS[2], -refund)
end
if budget_day then
  add_to_total(KEYS[3], cost_delta)
end
if budget_month then
  add_to_total(KEYS[4], cost_delta)
end
return 1
"""
)


class RedisLimiter:
    def __init__(
        self,
        client: Redis,
        *,
        on_error: FailurePolicy,
        lease_s: float = 900.0,
        prefix: str = REDIS_PREFIX_LIMITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` decides the calendar windows only (tests move it across midnight); rates use Redis TIME."""
        self._client = client
        self._on_error = on_error
        self._lease_us = round(lease_s * 1e6)
        self._prefix = prefix
        self._clock = clock
        self._reserve_script = client.register_script(_RESERVE)
        self._settle_script = client.register_script(_SETTLE)
        self._last_outage_log = -math.inf

    async def reserve(self, demand: Demand, policy: LimitPolicy) -> Reservation:
        rules.refuse_impossible(demand, policy)
        windows = rules.calendar_windows(self._clock())
        if policy.unlimited:  # nothing to check or charge: no round trip, and no 503 while Redis is down
            return Reservation(demand=demand, policy=policy, day=windows.day, month=windows.month)
        try:
            reply = await self._reserve_script(
                keys=self._keys(demand.subject, windows.day, windows.month),
                args=self._reserve_args(demand, policy),
            )
        except RedisError as exc:
            if not _is_outage(exc):
                raise
            self._log_outage(exc)
            if self._on_error is FailurePolicy.CLOSED:
                raise LimitsUnavailable(
                    "Rate limits cannot be checked right now (the limits store is unreachable), so this server "
                    "refuses requests until it is back. Retry shortly.",
                    retry_after=UNAVAILABLE_RETRY_S,
                ) from exc
            return Reservation(demand=demand, policy=policy, day=windows.day, month=windows.month, enforced=False)
        return _reservation_from(reply, demand, policy, windows)

    async def settle(self, reservation: Reservation, *, tokens: int, cost_micros: int) -> None:
        demand, policy = reservation.demand, reservation.policy
        if not reservation.enforced or not (rules.needs_settling(policy) or policy.max_concurrent is not None):
            return
        tpm = policy.tokens_per_minute
        keys = self._keys(demand.subject, reservation.day, reservation.month)
        args: list[int | str] = [
            _NONE if tpm is None else tpm,
            demand.tokens - tokens,
            int(policy.tokens_per_day is not None),
            cost_micros - demand.cost_micros,
            int(policy.budget_per_day_usd is not None),
            int(policy.budget_per_month_usd is not None),
            demand.lease_id,
        ]
        try:
            await self._settle_script(keys=keys[1:], args=args)
        except RedisError as exc:
            # Never raise: settle runs as a request ends. Its reservation stands, which errs on the safe side.
            if _is_outage(exc):
                self._log_outage(exc)
            else:
                logger.exception("Settling the limits of request %s failed", demand.lease_id)

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except RedisError as exc:
            raise LimitsUnavailable(f"The limits store (Redis) is unreachable: {type(exc).__name__}.") from exc

    async def close(self) -> None:
        await self._client.aclose()

    def _keys(self, subject: str, day: str, month: str) -> list[str]:
        base = f"{self._prefix}{{{subject}}}:"
        suffixes = ("rpm", "tpm", f"tpd:{day}", f"usd:{day}", f"usd:{month}", "leases", "unsettled")
        return [base + suffix for suffix in suffixes]

    def _reserve_args(self, demand: Demand, policy: LimitPolicy) -> list[int | str]:
        def limit(value: int | None) -> int:
            return _NONE if value is None else value

        return [
            rules.request_capacity(policy),
            limit(policy.requests_per_minute),
            limit(policy.tokens_per_minute),
            limit(policy.tokens_per_day),
            limit(rules.budget_micros(policy.budget_per_day_usd)),
            limit(rules.budget_micros(policy.budget_per_month_usd)),
            limit(policy.max_concurrent),
            demand.tokens,
            demand.cost_micros,
            demand.lease_id,
            self._lease_us,
            rules.SETTLE_WITHIN_S * 1_000_000 if rules.needs_settling(policy) else 0,
            DAY_KEY_TTL_S,
            MONTH_KEY_TTL_S,
        ]

    def _log_outage(self, exc: RedisError) -> None:
        now = time.monotonic()
        if now - self._last_outage_log < OUTAGE_LOG_INTERVAL_S:
            return
        self._last_outage_log = now
        admitting = "admitting requests without limits" if self._on_error is FailurePolicy.OPEN else "refusing"
        logger.warning(
            "Redis is unreachable for rate limits (%s: %s); %s (limits.on_redis_error=%s). "
            "Logged at most every %.0f s.",
            type(exc).__name__,
            exc,
            admitting,
            self._on_error.value,
            OUTAGE_LOG_INTERVAL_S,
        )


def _reservation_from(reply: Any, demand: Demand, policy: LimitPolicy, windows: rules.CalendarWindows) -> Reservation:
    outcome, *values = (int(value) for value in reply)
    if outcome == 0:
        requests_level, tokens_level, tokens_today, cost_today, cost_month = values
        charged = rules.Charged(requests_level, tokens_level, tokens_today, cost_today, cost_month)
        return rules.admitted(demand, policy, windows, charged)
    if outcome == 1:
        raise rules.concurrency_limited(policy)
    if outcome == 2:
        raise rules.requests_limited(policy, values[0] / 1e6)
    if outcome == 3:
        raise rules.tokens_limited(policy, demand, values[0] / 1e6)
    if outcome == 4:
        raise rules.daily_tokens_exhausted(policy, demand, values[0], windows)
    raise rules.budget_exhausted(policy, demand, values[0], windows, monthly=outcome == 6)


def _is_outage(exc: RedisError) -> bool:
    """Whether Redis is unreachable or refusing writes, rather than one of our scripts being wrong."""
    return not isinstance(exc, ResponseError) or isinstance(exc, ReadOnlyError | OutOfMemoryError)
