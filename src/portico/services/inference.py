"""Generation for chat, completions and predict: prompt preparation, context checks, admission and usage.

The HTTP layer hands in validated wire models and gets back either a finished ``GenerationResult`` or a
stream of ``ChoiceDelta`` / ``ChoiceEnd`` events followed by one ``UsageReport``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from portico.constants import INLINE_TOKENIZE_CHARS, Capability, FinishReason, Priority
from portico.engines.base import ChatTurn, Engine, GenerationRequest, SamplingParams, TokenDelta
from portico.engines.registry import ModelRegistry, ServedModel
from portico.errors import (
    ContextLengthExceeded,
    EngineUnavailable,
    GenerationTimeout,
    InvalidRequest,
)
from portico.schemas.chat import ChatCompletionRequest, ChatMessage
from portico.schemas.common import JsonObjectFormat, JsonSchemaFormat, ResponseFormat, SamplingFields
from portico.schemas.completions import CompletionRequest
from portico.schemas.models import PredictRequest
from portico.schemas.tokenize import TokenizeRequest
from portico.services.metering import Ticket, UsageCounts, settled_on_exit
from portico.settings import Settings


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    tokens: Sequence[int]


@dataclass(frozen=True, slots=True)
class PreparedGeneration:
    """Everything needed to run a request: one entry in ``prompts`` per prompt, ``n`` choices each."""

    served: ServedModel
    engine: Engine
    prompts: list[Prompt]
    params: SamplingParams
    n: int = 1

    @property
    def choice_count(self) -> int:
        return len(self.prompts) * self.n

    @property
    def prompt_tokens(self) -> int:
        return sum(len(prompt.tokens) for prompt in self.prompts)

    @property
    def max_completion_tokens(self) -> int:
        """The most this request may generate, over all its choices: what the limits reserve."""
        return self.params.max_tokens * self.choice_count


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens served from the engine's prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class _Progress:
    """Usage so far, kept up to date while generating, so any ending (also a cancellation) can be billed."""

    prompt_tokens: int = 0  # prompts whose generation started
    completion_tokens: int = 0
    cached_tokens: int = 0

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.cached_tokens)

    def counts(self) -> UsageCounts:
        return UsageCounts(self.prompt_tokens, self.completion_tokens, self.cached_tokens)


@dataclass(frozen=True, slots=True)
class ChoiceResult:
    text: str
    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class GenerationResult:
    choices: list[ChoiceResult]
    usage: Usage


@dataclass(frozen=True, slots=True)
class ChoiceDelta:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ChoiceEnd:
    index: int
    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class UsageReport:
    usage: Usage


StreamEvent = ChoiceDelta | ChoiceEnd | UsageReport


def _json_constraint(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    if isinstance(response_format, JsonObjectFormat):
        return {}
    if isinstance(response_format, JsonSchemaFormat):
        return response_format.json_schema.schema_ or {}
    return None


async def _prompt(engine: Engine, text: str) -> Prompt:
    """``text`` and its tokens; a long text is tokenized on a worker thread (llama.cpp's tokenizer releases
    the GIL)."""
    if len(text) <= INLINE_TOKENIZE_CHARS:
        return Prompt(text, engine.tokenize(text))
    return Prompt(text, await asyncio.to_thread(engine.tokenize, text))


async def _chat_prompt(engine: Engine, turns: Sequence[ChatTurn]) -> tuple[Prompt, tuple[str, ...]]:
    """The chat rendered through the model's template, tokenized, and the stop strings the template implies."""
    rendered = engine.render_chat(turns)
    return await _prompt(engine, rendered.text), rendered.stop


def _chat_turns(messages: Sequence[ChatMessage]) -> list[ChatTurn]:
    # Chat templates know system/user/assistant; OpenAI's `developer` role is the newer name for `system`.
    return [ChatTurn("system" if m.role == "developer" else m.role, m.text()) for m in messages]


class InferenceService:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self._registry = registry
        self._timeout_s = settings.request_timeout_s
        self._max_n = settings.max_n

    # -- preparation: everything that can be rejected is rejected before any work starts --------------
    async def prepare_chat(self, body: ChatCompletionRequest, served: ServedModel | None = None) -> PreparedGeneration:
        """``body`` for ``served`` (default: the model it names), checked against the model's window."""
        served = served or self._registry.resolve(body.model)
        engine = served.generator(Capability.CHAT)
        prompt, template_stops = await _chat_prompt(engine, _chat_turns(body.messages))
        max_tokens = body.max_completion_tokens or body.max_tokens
        params = self._sampling(served, body, max_tokens, [prompt], _json_constraint(body.response_format))
        params = replace(params, stop=params.stop + template_stops)
        return PreparedGeneration(served, engine, [prompt], params, self._check_n(served, body.n))

    async def prepare_completion(
        self, body: CompletionRequest, served: ServedModel | None = None
    ) -> PreparedGeneration:
        served = served or self._registry.resolve(body.model)
        engine = served.generator(Capability.COMPLETIONS)
        prompts = [await _prompt(engine, text) for text in body.prompts()]
        params = self._sampling(served, body, body.max_tokens, prompts, None)
        return PreparedGeneration(served, engine, prompts, params, self._check_n(served, body.n))

    async def prepare_predict(self, model: str, body: PredictRequest) -> PreparedGeneration:
        served = self._registry.resolve(model)
        engine = served.generator(Capability.CHAT)
        prompt, template_stops = await _chat_prompt(engine, [ChatTurn("user", body.input)])
        params = self._sampling(served, body, body.max_tokens, [prompt], None)
        return PreparedGeneration(served, engine, [prompt], replace(params, stop=params.stop + template_stops))

    async def count_tokens(self, body: TokenizeRequest) -> tuple[ServedModel, int]:
        served = self._registry.resolve(body.model)
        engine = served.generator(Capability.TOKENIZE)
        if body.messages is not None:
            prompt, _ = await _chat_prompt(engine, _chat_turns(body.messages))
        else:
            prompt = await _prompt(engine, body.prompt or "")
        return served, len(prompt.tokens)

    def _check_n(self, served: ServedModel, n: int) -> int:
        # Each choice decodes in its own engine slot, all at once.
        limit = min(self._max_n, served.engine.slots)
        if n > limit:
            raise InvalidRequest(f"n must be at most {limit} for this model; got {n}.", param="n")
        return n

    def _sampling(
        self,
        served: ServedModel,
        body: SamplingFields,
        max_tokens: int | None,
        prompts: Sequence[Prompt],
        json_schema: dict[str, Any] | None,
    ) -> SamplingParams:
        if json_schema is not None:
            served.generator(Capability.JSON_MODE)  # a 400 unless the engine can enforce JSON output
        window = served.engine.context_window
        longest = max(len(p.tokens) for p in prompts)
        if max_tokens is None:
            max_tokens = window - longest
        if longest + max(max_tokens, 1) > window:
            raise ContextLengthExceeded(limit=window, prompt_tokens=longest, max_tokens=max(max_tokens, 1))
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            stop=body.stop_list(),
            json_schema=json_schema,
        )

    # -- execution -----------------------------------------------------------------------------------
    def ensure_room(self, prepared: PreparedGeneration) -> None:
        """Raise ``EngineOverloaded`` now, before a stream's headers go out, if the queue is full."""
        prepared.served.queue.ensure_room()

    async def complete(
        self,
        prepared: PreparedGeneration,
        ticket: Ticket,
        *,
        priority: Priority = Priority.INTERACTIVE,
        on_delta: Callable[[int, str], None] | None = None,
        timeout_s: float | None = None,
    ) -> GenerationResult:
        """The whole answer; ``on_delta(choice index, text)`` sees it as it is made. ``timeout_s`` (default:
        ``request_timeout_s``) bounds the generation: background work (jobs, batches) allows longer."""
        limit_s = timeout_s or self._timeout_s
        parts: list[list[str]] = [[] for _ in range(prepared.choice_count)]
        ends: dict[int, FinishReason] = {}
        progress = _Progress()
        with settled_on_exit(ticket, progress.counts):
            async with prepared.served.queue.slot(priority):
                try:
                    async with asyncio.timeout(limit_s):
                        async for event in self._events(prepared, progress):
                            if isinstance(event, ChoiceDelta):
                                ticket.note_first_token()
                                parts[event.index].append(event.text)
                                if on_delta is not None:
                                    on_delta(event.index, event.text)
                            elif isinstance(event, ChoiceEnd):
                                ends[event.index] = event.finish_reason
                except TimeoutError:
                    raise GenerationTimeout(
                        f"Generation did not finish within {limit_s:g} s. "
                        "Lower max_tokens, or use stream: true to receive tokens as they are made."
                    ) from None
        choices = [ChoiceResult("".join(parts[index]), ends[index]) for index in range(prepared.choice_count)]
        return GenerationResult(choices, progress.usage())

    async def stream(self, prepared: PreparedGeneration, ticket: Ticket) -> AsyncIterator[StreamEvent]:
        progress = _Progress()
        ticket.stream_started = True
        with settled_on_exit(ticket, progress.counts):
            async with prepared.served.queue.slot():
                async for event in self._events(prepared, progress):
                    if isinstance(event, ChoiceDelta):
                        ticket.note_first_token()
                    yield event

    async def _events(self, prepared: PreparedGeneration, progress: _Progress) -> AsyncIterator[StreamEvent]:
        """Each prompt's choices (interleaved as the engine makes them), then one UsageReport for all."""
        for number, prompt in enumerate(prepared.prompts):
            first_index = number * prepared.n
            request = GenerationRequest(prompt.text, prompt.tokens, prepared.params, prepared.n)
            generation = prepared.engine.generate(request)
            progress.prompt_tokens += len(prompt.tokens)
            try:
                async for event in generation:
                    if isinstance(event, TokenDelta):
                        yield ChoiceDelta(first_index + event.index, event.text)
                        continue
                    if event.reason is FinishReason.CANCELLED:
                        raise EngineUnavailable("The engine stopped before the answer was finished (shutting down).")
                    yield ChoiceEnd(first_index + event.index, event.reason)
            finally:
                # A no-op after a normal end; stops the decode loop when we were cancelled or timed out.
                generation.cancel()
                progress.completion_tokens += generation.completion_tokens
                progress.cached_tokens += generation.cached_tokens
        yield UsageReport(progress.usage())
