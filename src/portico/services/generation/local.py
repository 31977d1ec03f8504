"""The embedded engines as a backend: a model served in this process (llama.cpp, sentence-transformers, echo).

A request is prepared (tokenized, checked against the window) before admission, so everything that can be
refused is refused before the limits reserve anything; it then waits for an engine slot at its priority and
runs. Usage is counted as the engine makes it, so any ending (also a cancellation) is billed for what was used.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

from portico.constants import FinishReason, Priority
from portico.engines.base import GenerationRequest, TokenDelta
from portico.engines.registry import ServedModel
from portico.errors import EngineUnavailable, GenerationTimeout
from portico.schemas.embeddings import EmbeddingRequest
from portico.services.embeddings import prepare_embedding
from portico.services.generation.prompts import Prepared, prepare
from portico.services.generation.tool_calls import CallReader
from portico.services.generation.types import (
    Answer,
    Call,
    ChoiceEnd,
    Event,
    Moderated,
    Opened,
    Origin,
    TextDelta,
    TextRequest,
    Transcript,
    UsageReport,
    Vectors,
)
from portico.services.generation.upstream_answers import estimated_tokens
from portico.usage.meter import Charge
from portico.usage.tokens import TokenUsage


class LocalBackend:
    def __init__(self, served: ServedModel, *, timeout_s: float, max_n: int) -> None:
        self.served = served
        self.origin = Origin(served.snapshot, served.alias)
        self._timeout_s = timeout_s
        self._max_n = max_n

    async def check(self, body: TextRequest | EmbeddingRequest) -> None:
        if isinstance(body, EmbeddingRequest):
            await prepare_embedding(self.served, body)
        else:
            await prepare(self.served, body, max_n=self._max_n)

    async def _admitted(self, call: Call, charge: Charge) -> Prepared:
        prepared = await prepare(self.served, call.body, max_n=self._max_n)
        await charge.admit(
            model=self.served.snapshot,
            pricing=self.served.settings.pricing,
            prompt_tokens=prepared.prompt_tokens,
            max_completion_tokens=prepared.max_completion_tokens,
        )
        return prepared

    async def complete(self, call: Call, charge: Charge) -> Answer:
        """The whole answer; ``call.on_delta`` sees it as it is made, within ``call.timeout_s`` (default: the
        interactive ``request_timeout_s``; background work allows longer)."""
        prepared = await self._admitted(call, charge)
        limit_s = call.timeout_s or self._timeout_s
        transcript = Transcript(logprobs=prepared.params.logprobs is not None)
        async with self.served.queue.slot(call.priority):
            try:
                async with asyncio.timeout(limit_s):
                    async for event in _events(prepared, charge):
                        transcript.add(event)
                        if isinstance(event, TextDelta) and call.on_delta is not None:
                            call.on_delta(event.index, event.text)
            except TimeoutError:
                raise GenerationTimeout(
                    f"Generation did not finish within {limit_s:g} s. "
                    "Lower max_tokens, or use stream: true to receive tokens as they are made."
                ) from None
        return Answer(transcript.choices(), transcript.usage, self.origin)

    async def stream(self, call: Call, charge: Charge) -> Opened:
        """Admitted, with room in the engine's queue (a full queue is a 503 now, before any header is sent)."""
        prepared = await self._admitted(call, charge)
        self.served.queue.ensure_room()
        return Opened(self._streamed(prepared, charge, call.priority), self.origin)

    async def _streamed(self, prepared: Prepared, charge: Charge, priority: Priority) -> AsyncGenerator[Event, None]:
        async with self.served.queue.slot(priority), aclosing(_events(prepared, charge)) as events:
            async for event in events:
                yield event

    async def embed(self, body: EmbeddingRequest, charge: Charge, priority: Priority) -> Vectors:
        """One vector per input, in order. The input tokens are billed once the vectors are made (an embedding
        has no partial result)."""
        prepared = await prepare_embedding(self.served, body)
        await charge.admit(
            model=self.served.snapshot,
            pricing=self.served.settings.pricing,
            prompt_tokens=prepared.prompt_tokens,
            max_completion_tokens=0,
        )
        async with self.served.queue.slot(priority):
            vectors = await prepared.embedder.embed(prepared.inputs)
        charge.count(TokenUsage(prepared.prompt_tokens))
        return Vectors(vectors, prepared.prompt_tokens, self.origin)

    async def moderate(self, texts: list[str], charge: Charge | None, priority: Priority) -> Moderated:
        classifier = self.served.classifier()
        if charge is not None:
            await charge.admit(
                model=self.served.snapshot,
                pricing=self.served.settings.pricing,
                prompt_tokens=estimated_tokens(sum(len(text) for text in texts)),
                max_completion_tokens=0,
            )
        async with self.served.queue.slot(priority):
            classified = await classifier.classify(texts)
        if charge is not None:
            charge.count(TokenUsage(classified.tokens))
        scores = [{str(category): score for category, score in text.items()} for text in classified.scores]
        return Moderated(scores, classified.tokens, self.origin)


async def _events(prepared: Prepared, charge: Charge) -> AsyncGenerator[Event, None]:
    """Each prompt's choices (interleaved as the engine makes them), then one UsageReport for all; the usage
    so far is counted on ``charge`` after every prompt and whenever the generation stops. A request with
    tools has each choice's text read for calls."""
    used = TokenUsage()
    for number, prompt in enumerate(prepared.prompts):
        first_index = number * prepared.n
        scored = prepared.echo and prepared.params.logprobs is not None
        request = GenerationRequest(prompt.text, prompt.tokens, prepared.params, prepared.n, prompt_logprobs=scored)
        generation = prepared.engine.generate(request)
        started = used + TokenUsage(len(prompt.tokens))
        charge.count(started)
        readers = {i: CallReader(first_index + i) for i in range(prepared.n)} if prepared.tools else {}
        unechoed = set(range(prepared.n)) if prepared.echo else set()
        ended: set[int] = set()  # choices ended early, on a repeated call (the engine's later events are dropped)
        try:
            async for event in generation:
                index, reader = first_index + event.index, readers.get(event.index)
                if event.index in ended:
                    continue
                if event.index in unechoed:  # the prompt (scored, if asked) before the choice's own text
                    unechoed.discard(event.index)
                    yield TextDelta(index, prompt.text, tuple(generation.prompt_logprobs))
                if isinstance(event, TokenDelta):
                    charge.first_token()
                    delta = TextDelta(index, event.text, event.logprobs)
                    for item in reader.feed(delta) if reader else [delta]:
                        yield item
                    if reader is not None and reader.repeated:
                        ended.add(event.index)
                        for item in reader.end(ChoiceEnd(index, FinishReason.STOP)):
                            yield item
                        if len(ended) == prepared.n:
                            break
                    continue
                if event.reason is FinishReason.CANCELLED:
                    raise EngineUnavailable("The engine stopped before the answer was finished (shutting down).")
                end = ChoiceEnd(index, event.reason)
                for item in reader.end(end) if reader else [end]:
                    yield item
        finally:
            # A no-op after a normal end; stops the decode loop when we were cancelled or timed out.
            generation.cancel()
            used = started + TokenUsage(0, generation.completion_tokens, generation.cached_tokens)
            charge.count(used)
    yield UsageReport(used)
