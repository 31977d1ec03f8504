"""The real embedded engines, shared by the tests that need them, and helpers to drive them directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from portico.constants import FinishReason
from portico.engines.base import ChatTurn, GenerationRequest, SamplingParams, TokenDelta
from portico.engines.llama_cpp import LlamaCppEngine
from portico.engines.sentence_transformers import SentenceTransformersEngine
from portico.settings import LlamaCppModel, SentenceTransformersModel

QUESTION = "What is the capital of France? Answer in one word."


@pytest.fixture(scope="session")
def llama_engine() -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(
        LlamaCppModel(alias="smollm2", snapshot="smollm2-test", threads=2, parallel_slots=8, prefill_chunk=128)
    )
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.close())


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def minilm_engine() -> AsyncIterator[SentenceTransformersEngine]:
    """all-MiniLM-L6-v2, loaded once. Its batcher lives on the session's event loop, so the tests that use it
    run there too (``pytest.mark.asyncio(loop_scope="session")``)."""
    engine = SentenceTransformersEngine(SentenceTransformersModel(alias="all-minilm-l6-v2", snapshot="minilm-test"))
    await engine.start()
    yield engine
    await engine.close()


def request_for(engine: LlamaCppEngine, question: str, *, n: int = 1, **params: Any) -> GenerationRequest:
    prompt = engine.render_chat([ChatTurn("user", question)])
    stop = tuple(params.pop("stop", ())) + prompt.stop
    return GenerationRequest(prompt.text, engine.tokenize(prompt.text), SamplingParams(stop=stop, **params), n)


@dataclass
class Answer:
    texts: list[str]
    finish_reasons: list[FinishReason]
    completion_tokens: int
    cached_tokens: int

    @property
    def text(self) -> str:
        return self.texts[0]

    @property
    def finish_reason(self) -> FinishReason:
        return self.finish_reasons[0]


async def run(engine: LlamaCppEngine, request: GenerationRequest) -> Answer:
    """Every choice's text and end, collected from the engine's interleaved events."""
    generation = engine.generate(request)
    parts: list[list[str]] = [[] for _ in range(request.n)]
    reasons: dict[int, FinishReason] = {}
    async for event in generation:
        if isinstance(event, TokenDelta):
            parts[event.index].append(event.text)
        else:
            reasons[event.index] = event.reason
    return Answer(
        ["".join(p) for p in parts],
        [reasons[i] for i in range(request.n)],
        generation.completion_tokens,
        generation.cached_tokens,
    )
