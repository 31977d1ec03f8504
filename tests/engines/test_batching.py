"""Continuous batching with the real model: exact per-request sampling, slots, chunked prefill, prefix reuse."""

from __future__ import annotations

import asyncio

import pytest

from portico.engines.base import TokenDelta
from portico.engines.llama_cpp import LlamaCppEngine
from tests.conftest import wait_until
from tests.engines.conftest import request_for, run

pytestmark = pytest.mark.model

QUESTIONS = [
    "What is the capital of France?",
    "Name three colors.",
    "What do cats like to eat?",
    "Write one sentence about the sea.",
    "What is 2 plus 2?",
    "Why is the sky blue?",
    "Give me a tip for sleeping well.",
    "What is a computer?",
]


@pytest.mark.parametrize("params", [{"temperature": 0}, {"temperature": 1.0, "seed": 42}], ids=["greedy", "seeded"])
async def test_a_request_gets_the_same_text_alone_or_among_eight(
    llama_engine: LlamaCppEngine, params: dict[str, float]
) -> None:
    alone = [(await run(llama_engine, request_for(llama_engine, q, max_tokens=24, **params))).text for q in QUESTIONS]

    together = await asyncio.gather(
        *(run(llama_engine, request_for(llama_engine, q, max_tokens=24, **params)) for q in QUESTIONS)
    )

    assert [answer.text for answer in together] == alone
    assert all(len(text.split()) >= 2 for text in alone)


async def test_eight_requests_are_decoded_in_one_batch(llama_engine: LlamaCppEngine) -> None:
    sizes: list[int] = []
    tasks = [
        asyncio.create_task(run(llama_engine, request_for(llama_engine, q, max_tokens=40, temperature=0)))
        for q in QUESTIONS
    ]
    while not all(task.done() for task in tasks):
        sizes.append(llama_engine.stats.last_batch_size)
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)

    assert max(sizes) >= 8


async def test_n_choices_share_one_prefill(llama_engine: LlamaCppEngine) -> None:
    request = request_for(llama_engine, "Tell me a fun fact about owls, please.", n=3, max_tokens=16, temperature=0)
    before = llama_engine.stats.prompt_tokens_decoded

    answer = await run(llama_engine, request)

    computed = llama_engine.stats.prompt_tokens_decoded - before
    assert computed == len(request.prompt_tokens) - answer.cached_tokens
    assert len(set(answer.texts)) == 1 and answer.texts[0]
    assert answer.completion_tokens == 3 * 16


async def test_seeded_choices_differ_from_each_other(llama_engine: LlamaCppEngine) -> None:
    request = request_for(llama_engine, "Invent a name for a dragon.", n=3, max_tokens=12, temperature=1.0, seed=7)

    answer = await run(llama_engine, request)

    assert len(set(answer.texts)) > 1


async def test_the_next_turn_reuses_the_cached_prefix(llama_engine: LlamaCppEngine) -> None:
    system = "You are a terse assistant who knows a great deal about the history of European cities. " * 3
    first = request_for(llama_engine, system + "Tell me about Rome.", max_tokens=8, temperature=0)
    second = request_for(llama_engine, system + "Tell me about Paris.", max_tokens=8, temperature=0)
    shared = next(i for i, (a, b) in enumerate(zip(first.prompt_tokens, second.prompt_tokens, strict=False)) if a != b)

    await run(llama_engine, first)
    before = llama_engine.stats.prompt_tokens_decoded
    answer = await run(llama_engine, second)

    assert answer.cached_tokens == shared > 50
    assert llama_engine.stats.prompt_tokens_decoded - before == len(second.prompt_tokens) - shared


async def test_cancelling_mid_batch_frees_the_slot_for_the_next_request(llama_engine: LlamaCppEngine) -> None:
    # At temperature 0 the model tells these stories on and on: only a cancel ends them within the test.
    stories = [f"Write a very long story about {topic}." for topic in ("a dragon", "a robot", "the sea", "a cat")]
    stories += [f"Write a very long story about {topic}." for topic in ("a map", "a baker", "Mars", "a king")]
    long = [llama_engine.generate(request_for(llama_engine, s, max_tokens=3000, temperature=0)) for s in stories]
    firsts = [asyncio.create_task(anext(g)) for g in long]
    await asyncio.gather(*firsts)
    await wait_until(lambda: llama_engine.stats.busy_slots == 8)

    ninth = llama_engine.generate(request_for(llama_engine, "Say hello.", max_tokens=3000, temperature=0))
    ninth_first = asyncio.create_task(anext(ninth))
    await asyncio.sleep(0.5)
    assert not ninth_first.done(), "a ninth request must wait while all eight slots are busy"

    long[3].cancel()
    event = await asyncio.wait_for(ninth_first, timeout=30)
    assert isinstance(event, TokenDelta)
    await wait_until(lambda: llama_engine.stats.busy_slots == 8)

    for generation in long:
        generation.cancel()
    ninth.cancel()
    await wait_until(lambda: llama_engine.stats.busy_slots == 0, timeout=30)


async def test_a_long_prompt_is_prefilled_in_chunks_between_other_streams_tokens(llama_engine: LlamaCppEngine) -> None:
    streaming = llama_engine.generate(request_for(llama_engine, "Write a long story.", max_tokens=3000, temperature=0))
    await anext(streaming)
    long_prompt = request_for(
        llama_engine, "Summarize this. " + "The quick brown fox jumps over the lazy dog. " * 200, max_tokens=8
    )
    assert len(long_prompt.prompt_tokens) > 2000

    tokens_while_prefilling = 0
    long_request = llama_engine.generate(long_prompt)
    first_of_long = asyncio.create_task(anext(long_request))
    while not first_of_long.done():
        await anext(streaming)
        tokens_while_prefilling += 1
    streaming.cancel()
    long_request.cancel()

    # 128-token chunks: the running stream gets a token at every one of the prefill steps.
    assert tokens_while_prefilling >= len(long_prompt.prompt_tokens) // 128 - 1
    await wait_until(lambda: llama_engine.stats.busy_slots == 0, timeout=30)
