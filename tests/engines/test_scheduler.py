"""AdmissionQueue: bounded slots, bounded waiters, priority order, deadlines and clean cancellation."""

from __future__ import annotations

import asyncio

import pytest

from portico.constants import Priority
from portico.engines.scheduler import AdmissionQueue
from portico.errors import EngineOverloaded


async def hold(
    queue: AdmissionQueue,
    release: asyncio.Event,
    log: list[str],
    name: str,
    priority: Priority = Priority.INTERACTIVE,
) -> None:
    async with queue.slot(priority):
        log.append(name)
        await release.wait()


async def test_slots_bound_concurrency_and_waiters_are_served_in_order() -> None:
    queue = AdmissionQueue(slots=1, max_waiting=10, wait_timeout_s=5)
    release, log = asyncio.Event(), []
    tasks = [asyncio.create_task(hold(queue, release, log, name)) for name in "abc"]
    await asyncio.sleep(0.01)
    assert log == ["a"] and queue.waiting == 2 and queue.busy_slots == 1

    release.set()
    await asyncio.gather(*tasks)
    assert log == ["a", "b", "c"]
    assert queue.waiting == 0 and queue.busy_slots == 0


async def test_interactive_work_is_served_before_jobs_and_batches() -> None:
    queue = AdmissionQueue(slots=1, max_waiting=10, wait_timeout_s=5)
    release, log = asyncio.Event(), []
    first = asyncio.create_task(hold(queue, release, log, "running"))
    await asyncio.sleep(0.01)
    batch = asyncio.create_task(hold(queue, release, log, "batch", priority=Priority.BATCH))
    job = asyncio.create_task(hold(queue, release, log, "job", priority=Priority.JOB))
    interactive = asyncio.create_task(hold(queue, release, log, "interactive"))
    await asyncio.sleep(0.01)

    release.set()
    await asyncio.gather(first, batch, job, interactive)
    assert log == ["running", "interactive", "job", "batch"]


async def test_a_full_queue_rejects_at_once_with_retry_after() -> None:
    queue = AdmissionQueue(slots=1, max_waiting=1, wait_timeout_s=5)
    release, log = asyncio.Event(), []
    tasks = [asyncio.create_task(hold(queue, release, log, name)) for name in "ab"]
    await asyncio.sleep(0.01)

    with pytest.raises(EngineOverloaded) as rejected:
        queue.ensure_room()
    assert rejected.value.retry_after is not None and rejected.value.retry_after >= 1
    with pytest.raises(EngineOverloaded):
        await hold(queue, release, log, "c")
    release.set()
    await asyncio.gather(*tasks)


async def test_waiting_past_the_deadline_is_overloaded_and_leaves_the_queue() -> None:
    queue = AdmissionQueue(slots=1, max_waiting=5, wait_timeout_s=0.05)
    release, log = asyncio.Event(), []
    running = asyncio.create_task(hold(queue, release, log, "a"))
    await asyncio.sleep(0.01)

    with pytest.raises(EngineOverloaded, match=r"0\.05 s"):
        await hold(queue, release, log, "late")
    assert queue.waiting == 0
    release.set()
    await running
    assert queue.busy_slots == 0


async def test_a_cancelled_waiter_does_not_leak_its_place_or_a_slot() -> None:
    queue = AdmissionQueue(slots=1, max_waiting=5, wait_timeout_s=5)
    release, log = asyncio.Event(), []
    running = asyncio.create_task(hold(queue, release, log, "a"))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(hold(queue, release, log, "gone"))
    after = asyncio.create_task(hold(queue, release, log, "after"))
    await asyncio.sleep(0.01)

    gone.cancel()
    release.set()
    await asyncio.gather(running, after)
    assert log == ["a", "after"]
    assert queue.waiting == 0 and queue.busy_slots == 0


async def test_retry_after_grows_with_the_queue() -> None:
    queue = AdmissionQueue(slots=1, max_waiting=50, wait_timeout_s=5)
    release, log = asyncio.Event(), []
    empty = queue.retry_after_s()
    tasks = [asyncio.create_task(hold(queue, release, log, str(i))) for i in range(20)]
    await asyncio.sleep(0.01)

    assert queue.retry_after_s() > empty
    release.set()
    await asyncio.gather(*tasks)
