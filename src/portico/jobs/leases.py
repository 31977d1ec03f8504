"""Leases, the transient rule and backoff: what the job runner and the batch runner do the same way (the webhook
sender uses the backoff too).

**Leases.** A runner holds a row (a job, a batch) by writing its name in the row's ``lease_owner`` and a time in
``lease_expires_at``. Each table's queries (``storage/jobs.py``, ``storage/batches.py``) make every write of a
runner conditional on its name, so a runner that lost a row writes nothing to it. ``Leases`` keeps the rules:

- *claim*: in one transaction, take rows nobody holds or whose lease lapsed, each by a compare-and-set (of several
  runners exactly one wins), for ``jobs.lease_s``. A row the runner holds already is skipped: its lease lapsed
  while the database was slow, and the heartbeat renews it.
- *renew*: one heartbeat loop renews the leases every third of ``lease_s``, and looks at the rows (cancelled? still
  ours?) as often as the runner asks. A beat that fails (the database is unreachable) is tried at the next tick:
  a lease has two thirds of its length as slack for that.
- *write*: a write that finds the database unreachable is retried for as long as the lease could still be ours.
- *hand back*: a runner that stops cleanly frees its rows at once (``released()``); a runner that dies stops
  renewing, and once its leases lapse (``lease_s`` later) any runner may claim the rows.

**Transient errors.** Work turned away for a reason that passes by itself waits and tries again instead of failing:
the error is retryable, it is a refusal (429: a per-minute rate, the concurrency limit, an upstream's 429; 503: a
full engine queue, an engine or upstream not reachable yet, the limits or the database briefly down), and its
``retry_after``, when it gives one, is at most ``MAX_RETRY_AFTER_S``. A limit that resets far later, the daily token
quota (``tokens_per_day``) or a daily or monthly budget (``budget``), is not retryable: the work fails at once with
that error, whatever the hour, rather than waiting until midnight or the first of the month. Everything else (a
bad request, a revoked key, a timeout, an engine error) fails the work too.

**Backoff.** ``backoff_s``: without a ``retry_after``, full jitter over an exponential ceiling (anywhere between 0
and ``base · 2^(n-1)`` after the n-th failure, at most a cap); with one, that long and up to a quarter more, so
work turned away together does not come back together.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Container, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from portico.errors import PorticoError, StorageUnavailable
from portico.storage.database import Database

# A refusal whose retry_after is longer than this is not waited out: the work fails with it (15 minutes: every
# per-minute limit passes well within it, a limit that resets at midnight does not).
MAX_RETRY_AFTER_S = 15 * 60.0
BACKOFF_BASE_S = 1.0  # without a retry_after: the first wait is up to this, doubled per failure in a row,
BACKOFF_CAP_S = 60.0  # up to this
MIN_WAIT_S = 0.05  # the least wait, whatever retry_after says
_RETRY_AFTER_JITTER = 0.25
_REFUSED_STATUSES = (429, 503)
_WRITE_RETRY_S = 0.5

Warn = Callable[[str, Exception], None]


class LeaseLost(Exception):
    """The row is no longer this runner's: its lease lapsed and another runner took it, or the row was erased."""


class Leased(Protocol):
    @property
    def id(self) -> str: ...


Row = TypeVar("Row", bound=Leased)


def is_transient(error: PorticoError) -> bool:
    """Whether work that ``error`` turned away should wait and run again rather than fail with it."""
    if not error.retryable or error.status_code not in _REFUSED_STATUSES:
        return False
    return error.retry_after is None or error.retry_after <= MAX_RETRY_AFTER_S


def backoff_s(
    failures: int, *, retry_after: float | None = None, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S
) -> float:
    """How long to wait after the ``failures``-th failure in a row (from 1) before trying again.

    A ``retry_after`` is when the work could pass, so it is waited in full (it is bounded by the transient rule,
    not by ``cap_s``); the jitter only adds to it.
    """
    if retry_after is not None:
        return max(retry_after, MIN_WAIT_S) * random.uniform(1.0, 1.0 + _RETRY_AFTER_JITTER)
    ceiling = min(cap_s, base_s * 2.0 ** min(failures - 1, 32))  # the exponent bounded: 2.0 ** 1100 overflows
    return random.uniform(0.0, ceiling)


def released(*, hold_until: float | None = None) -> dict[str, Any]:
    """The lease columns of a row handed back: nobody holds it (and with ``hold_until``, nobody claims it before)."""
    return {"lease_owner": None, "lease_expires_at": hold_until}


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True as soon as ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


class Leases:
    """The leases one runner holds on the rows of one table, under its name (``owner``)."""

    def __init__(self, database: Database, owner: str, lease_s: float) -> None:
        self.database = database
        self.owner = owner
        self.lease_s = lease_s

    @property
    def renew_every_s(self) -> float:
        return self.lease_s / 3

    def until(self, now: float) -> float:
        """When a lease taken or renewed at ``now`` lapses."""
        return now + self.lease_s

    async def claim(
        self,
        find: Callable[[AsyncSession, float, int], Awaitable[Sequence[Row]]],
        take: Callable[[AsyncSession, Row, float], Awaitable[bool]],
        *,
        limit: int,
        scan: int | None = None,
        held: Container[str] = (),
    ) -> list[Row]:
        """Up to ``limit`` rows, taken in one transaction from the ``scan`` (default: ``limit``) that ``find`` lists.

        ``take`` is the table's compare-and-set, with the lease until ``until(now)``; it returns whether it won
        the row (it may also settle a row instead, such as a cancelled job, and return False).
        """
        now = time.time()
        taken: list[Row] = []
        async with self.database.session() as session:
            for row in await find(session, now, scan or limit):
                if len(taken) == limit:
                    break
                if row.id not in held and await take(session, row, now):
                    taken.append(row)
            await session.commit()
        return taken

    async def claim_loop(
        self,
        claim: Callable[[int], Awaitable[int]],
        room: Callable[[], int],
        *,
        poll_s: float,
        stop: asyncio.Event,
        warn: Warn,
        wake: asyncio.Event | None = None,
    ) -> None:
        """Claim work while the runner has ``room()``, until ``stop`` is set; ``claim(n)`` takes up to ``n`` rows and
        says how many it took. With no room, or fewer rows than room, it waits ``poll_s`` or until ``wake`` is set
        (set it when a run ends, and on stopping). It stops between two claims, never inside one: a cancelled
        query may leave its connection unusable."""
        while not stop.is_set():
            free = room()
            taken = 0
            if free > 0:
                try:
                    taken = await claim(free)
                except Exception as exc:
                    warn("could not claim work", exc)
            if free <= 0 or taken < free:
                if wake is None:
                    await stopped_within(stop, poll_s)
                else:
                    wake.clear()
                    await stopped_within(wake, poll_s)

    async def keep(
        self,
        beat: Callable[[bool], Awaitable[None]],
        *,
        check_every_s: float,
        warn: Warn,
        stop: asyncio.Event | None = None,
    ) -> None:
        """The heartbeat: ``beat(renew)`` every ``check_every_s`` (at least every third of the lease), ``renew`` True
        once every third of the lease. It ends when ``stop`` is set (or the task is cancelled), and by raising when
        a beat raises ``LeaseLost``; a beat that fails otherwise is tried again at the next tick."""
        tick = min(check_every_s, self.renew_every_s)
        renew_at = 0.0
        stop = stop or asyncio.Event()  # never set: the task is cancelled instead
        while not await stopped_within(stop, tick):
            started = time.monotonic()
            renew = started >= renew_at
            try:
                await beat(renew)
            except LeaseLost:
                raise
            except Exception as exc:
                warn("could not renew leases", exc)
                continue
            if renew:
                renew_at = started + self.renew_every_s

    async def write(self, write: Callable[[], Awaitable[bool]], *, warn: Warn) -> bool:
        """Run ``write`` (it returns False when the lease is gone), retried while the database is unreachable for as
        long as the lease could still be ours; False if it never got through."""
        deadline = time.monotonic() + self.lease_s
        while True:
            try:
                return await write()
            except StorageUnavailable as exc:
                if time.monotonic() >= deadline:
                    warn("gave up writing under a lease", exc)
                    return False
                await asyncio.sleep(_WRITE_RETRY_S)
