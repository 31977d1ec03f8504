"""MicroBatcher: concurrent submissions share calls, each gets its own results, failures and exits stay local."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from portico.engines.microbatch import MicroBatcher
from portico.errors import EngineUnavailable


class Doubler:
    """A stand-in for a forward pass that records each batch it was given (and can be made to fail or wait)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(timeout=10)
        self.batches.append(items)
        if self.fail:
            raise RuntimeError("forward pass failed")
        return [item * 2 for item in items]


@pytest.fixture
async def doubler() -> AsyncIterator[tuple[MicroBatcher[int, int], Doubler]]:
    run = Doubler()
    batcher = MicroBatcher(run, max_items=4, window_s=0.05)
    batcher.start()
    yield batcher, run
    run.gate.set()
    await batcher.close()


async def test_concurrent_submissions_share_one_call_and_get_their_own_results(
    doubler: tuple[MicroBatcher[int, int], Doubler],
) -> None:
    batcher, run = doubler

    results = await asyncio.gather(batcher.submit([1]), batcher.submit([2, 3]), batcher.submit([4]))

    assert results == [[2], [4, 6], [8]]
    assert run.batches == [[1, 2, 3, 4]]


async def test_a_batch_holds_at_most_max_items_unless_one_submission_is_larger(
    doubler: tuple[MicroBatcher[int, int], Doubler],
) -> None:
    batcher, run = doubler

    results = await asyncio.gather(batcher.submit([1, 2, 3]), batcher.submit([4, 5]), batcher.submit([6] * 5))

    assert results == [[2, 4, 6], [8, 10], [12] * 5]
    assert run.batches == [[1, 2, 3, 4, 5], [6] * 5]


async def test_a_failed_call_fails_its_batch_and_the_next_batch_still_runs(
    doubler: tuple[MicroBatcher[int, int], Doubler],
) -> None:
    batcher, run = doubler
    run.fail = True

    with pytest.raises(RuntimeError, match="forward pass failed"):
        await batcher.submit([1])
    run.fail = False

    assert await batcher.submit([2]) == [4]


async def test_a_cancelled_submission_is_left_out_of_later_batches(
    doubler: tuple[MicroBatcher[int, int], Doubler],
) -> None:
    batcher, run = doubler
    run.gate.clear()
    first = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0.1)  # the first batch is now running (held at the gate)
    abandoned = asyncio.create_task(batcher.submit([2]))
    kept = asyncio.create_task(batcher.submit([3]))
    await asyncio.sleep(0)
    abandoned.cancel()
    run.gate.set()

    assert await first == [2]
    assert await kept == [6]
    assert run.batches == [[1], [3]]


async def test_close_answers_waiting_submissions_with_unavailable() -> None:
    run = Doubler()
    run.gate.clear()
    batcher = MicroBatcher(run, max_items=4, window_s=0)
    batcher.start()
    waiting = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0.05)

    await batcher.close()
    run.gate.set()

    with pytest.raises(EngineUnavailable):
        await waiting
    with pytest.raises(EngineUnavailable):
        await batcher.submit([2])
