"""The Redis limiter beyond the contract: exact across processes, its keys expire, and what happens without Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from portico.errors import LimitsUnavailable
from portico.limits.base import Demand, FailurePolicy, LimitPolicy, Reservation
from portico.limits.redis import DAY_KEY_TTL_S, MONTH_KEY_TTL_S, RedisLimiter

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

# Each process waits for "go" on stdin, then fires all its attempts at once against three subjects, each held
# by one limit, and prints how many of each were admitted. No lease is settled, so none frees during the test.
HAMMER = """
import asyncio, json, sys, uuid
from redis.asyncio import Redis
from portico.errors import RateLimited
from portico.limits.base import Demand, FailurePolicy, LimitPolicy
from portico.limits.redis import RedisLimiter

POLICIES = {
    "requests": LimitPolicy(requests_per_minute=5),
    "tokens_per_day": LimitPolicy(tokens_per_day=17),
    "concurrency": LimitPolicy(max_concurrent=7),
}

async def attempt(limiter, subject):
    demand = Demand(subject=subject, lease_id=uuid.uuid4().hex, tokens=1, cost_micros=0)
    try:
        await limiter.reserve(demand, POLICIES[subject])
    except RateLimited:
        return 0
    return 1

async def main(host, port, prefix, attempts):
    limiter = RedisLimiter(Redis(host=host, port=port), on_error=FailurePolicy.CLOSED, prefix=prefix)
    await limiter.ping()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    admitted = {}
    for subject in POLICIES:
        admitted[subject] = asyncio.gather(*(attempt(limiter, subject) for _ in range(attempts)))
    print(json.dumps({subject: sum(await results) for subject, results in admitted.items()}), flush=True)
    await limiter.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
"""
PROCESSES, ATTEMPTS = 4, 12


async def test_limits_are_exact_across_processes(redis_client: Redis, redis_prefix: str) -> None:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HAMMER,
            REDIS_HOST,
            str(REDIS_PORT),
            redis_prefix,
            str(ATTEMPTS),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    for process in processes:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"ready\n"

    outputs = await asyncio.gather(*(process.communicate(b"go\n") for process in processes))

    counts = [json.loads(stdout) for stdout, _ in outputs]
    assert all(process.returncode == 0 for process in processes)
    totals = {subject: sum(count[subject] for count in counts) for subject in counts[0]}
    assert totals == {"requests": 5, "tokens_per_day": 17, "concurrency": 7}  # out of 48 attempts each


async def test_every_key_expires_and_shares_the_subjects_slot(redis_client: Redis, redis_prefix: str) -> None:
    limiter = RedisLimiter(redis_client, on_error=FailurePolicy.CLOSED, prefix=redis_prefix)
    policy = LimitPolicy(
        requests_per_minute=5,
        tokens_per_minute=10,
        tokens_per_day=10,
        max_concurrent=2,
        budget_per_day_usd=1.0,
        budget_per_month_usd=1.0,
    )
    await limiter.reserve(Demand(subject="key_a", lease_id="req_1", tokens=4, cost_micros=10), policy)

    ttls = {
        key.decode().removeprefix(redis_prefix): await redis_client.ttl(key)
        async for key in redis_client.scan_iter(match=f"{redis_prefix}*")
    }

    today, month = datetime.now(UTC).strftime("%Y-%m-%d"), datetime.now(UTC).strftime("%Y-%m")
    assert set(ttls) == {
        f"{{key_a}}:{name}"
        for name in ("rpm", "tpm", f"tpd:{today}", f"usd:{today}", f"usd:{month}", "leases", "unsettled")
    }
    assert 0 < ttls["{key_a}:rpm"] <= 12 + 1  # one request refills in 12 s
    assert 0 < ttls["{key_a}:tpm"] <= 24 + 1  # four tokens refill in 24 s
    assert DAY_KEY_TTL_S - 5 <= ttls[f"{{key_a}}:tpd:{today}"] <= DAY_KEY_TTL_S
    assert MONTH_KEY_TTL_S - 5 <= ttls[f"{{key_a}}:usd:{month}"] <= MONTH_KEY_TTL_S
    assert 900 - 5 <= ttls["{key_a}:leases"] <= 900 + 1
    assert all(ttl > 0 for ttl in ttls.values())


# Without Redis: admit unchecked (open) or refuse (closed), and say so in the log, not once per request.


@pytest.fixture
async def unreachable() -> AsyncIterator[Redis]:
    """A client for a port where nothing listens: bound, then closed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # No retries: redis-py's default retries with backoff for seconds before it reports the outage.
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    yield client
    await client.aclose()


def a_demand() -> Demand:
    return Demand(subject="key_a", lease_id="req_1", tokens=10, cost_micros=10)


async def test_fail_open_admits_unchecked_and_warns_once(unreachable: Redis, caplog: pytest.LogCaptureFixture) -> None:
    limiter = RedisLimiter(unreachable, on_error=FailurePolicy.OPEN)
    policy = LimitPolicy(requests_per_minute=1, tokens_per_day=10)

    with caplog.at_level(logging.WARNING, logger="portico.limits"):
        reservations = [await limiter.reserve(a_demand(), policy) for _ in range(3)]
        for reservation in reservations:
            await limiter.settle(reservation, tokens=5, cost_micros=5)

    assert [reservation.enforced for reservation in reservations] == [False, False, False]
    now = datetime.fromtimestamp(time.time(), UTC)
    assert (reservations[0].day, reservations[0].month) == (now.strftime("%Y-%m-%d"), now.strftime("%Y-%m"))
    assert (reservations[0].requests, reservations[0].tokens) == (None, None)
    warnings = [record for record in caplog.records if record.name == "portico.limits"]
    assert len(warnings) == 1
    assert "admitting requests without limits" in warnings[0].getMessage()


async def test_fail_closed_refuses_with_limits_unavailable(unreachable: Redis) -> None:
    limiter = RedisLimiter(unreachable, on_error=FailurePolicy.CLOSED)

    with pytest.raises(LimitsUnavailable) as refused:
        await limiter.reserve(a_demand(), LimitPolicy(requests_per_minute=1))

    assert (refused.value.status_code, refused.value.code) == (503, "limits_unavailable")
    assert refused.value.retry_after is not None
    assert "Retry" in refused.value.message


async def test_keys_without_limits_pass_while_redis_is_down(unreachable: Redis) -> None:
    limiter = RedisLimiter(unreachable, on_error=FailurePolicy.CLOSED)

    reservation = await limiter.reserve(a_demand(), LimitPolicy())

    assert reservation.enforced


async def test_settle_never_raises_without_redis(unreachable: Redis, caplog: pytest.LogCaptureFixture) -> None:
    limiter = RedisLimiter(unreachable, on_error=FailurePolicy.CLOSED)
    policy = LimitPolicy(tokens_per_minute=10, max_concurrent=1)
    reservation = Reservation(demand=a_demand(), policy=policy, day="2026-03-14", month="2026-03")

    with caplog.at_level(logging.WARNING, logger="portico.limits"):
        await limiter.settle(reservation, tokens=1, cost_micros=1)

    assert any(record.name == "portico.limits" for record in caplog.records)


async def test_ping_tells_whether_redis_is_reachable(redis_client: Redis, unreachable: Redis) -> None:
    await RedisLimiter(redis_client, on_error=FailurePolicy.OPEN).ping()

    with pytest.raises(LimitsUnavailable):
        await RedisLimiter(unreachable, on_error=FailurePolicy.OPEN).ping()
