"""The engine interfaces: ``Engine`` generates text, ``Embedder`` turns inputs into vectors.

For an ``Engine``, per request, an async iterator of token deltas with a cancel. A ``Generation`` (all ``n``
choices of one prompt) is fed by a producer that runs elsewhere (the decode loop's thread, or a task for the
echo engine) and read on the event loop, so inference never blocks it. The HTTP layer only ever sees these
interfaces, so engines can change without it noticing.

An ``Embedder`` is its own small interface rather than more methods on ``Engine``: no model here does both,
and an engine that cannot generate should not have to pretend it can.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from portico.constants import Capability, FinishReason
from portico.safety.policy import Category


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A chat rendered through the model's template, plus the stop strings the template implies."""

    text: str
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Grammar:
    """A llama.cpp grammar (GBNF) the output must follow: from the first token, or (lazy) from where
    ``trigger`` first appears in the text, free before it."""

    gbnf: str
    trigger: str | None = None


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    # None: free text. {}: any JSON object. Otherwise: a JSON schema the output must satisfy.
    json_schema: dict[str, Any] | None = None
    grammar: Grammar | None = None  # tool calls (never together with json_schema)
    logprobs: int | None = None  # None: none; k: each token's logprob and the k most likely at its place
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    prompt: str
    prompt_tokens: Sequence[int]
    params: SamplingParams
    n: int = 1  # choices sampled from the one prompt (prefilled once); choice i uses seed + i
    prompt_logprobs: bool = False  # score the prompt's own tokens (params.logprobs alternatives each)


@dataclass(frozen=True, slots=True)
class TopToken:
    token: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token's log probability, and the most likely tokens at its place (``top_logprobs``)."""

    token: str
    logprob: float | None  # None only for a prompt's first token, which nothing before it predicts
    bytes: tuple[int, ...]
    top: tuple[TopToken, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenDelta:
    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens that made ``text``, when the request asked


@dataclass(frozen=True, slots=True)
class ChoiceFinished:
    index: int
    reason: FinishReason


@dataclass(slots=True)
class _End:
    pass


@dataclass(slots=True)
class _Failure:
    error: BaseException


GenerationEvent = TokenDelta | ChoiceFinished


class Outbox:
    """Events a producer thread made in one decode step, handed to their event loops in one wake-up each.

    Waking the event loop once per token (eight times a step with eight streams) takes CPU from the decode
    threads at every token; once per step is enough, since the step's tokens are all made at the same moment.
    """

    def __init__(self) -> None:
        self._items: list[tuple[Generation, GenerationEvent | _End | _Failure]] = []

    def add(self, generation: Generation, item: GenerationEvent | _End | _Failure) -> None:
        self._items.append((generation, item))

    def flush(self) -> None:
        items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Generation, GenerationEvent | _End | _Failure]]] = {}
        for generation, item in items:
            by_loop.setdefault(generation.loop, []).append((generation, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                for generation, _ in batch:
                    generation.cancel()


def _deliver(batch: list[tuple[Generation, GenerationEvent | _End | _Failure]]) -> None:
    for generation, item in batch:
        generation.deliver(item)


class Generation:
    """One request's output: interleaved deltas of its choices, each choice's end, then the end of all.

    Producer methods are thread-safe; iteration happens on the event loop. With an ``outbox`` the producer's
    events wait there until the producer flushes it (once per decode step).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, outbox: Outbox | None = None) -> None:
        self.loop = loop
        self._outbox = outbox
        self._items: asyncio.Queue[GenerationEvent | _End | _Failure] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._closed = False
        # Written by the producer only; read by the consumer after the end (or for progress).
        self.completion_tokens = 0
        self.cached_tokens = 0  # prompt tokens whose KV cells were reused rather than recomputed
        # The prompt's tokens scored, when asked: complete before the first event of any choice.
        self.prompt_logprobs: list[TokenLogprob] = []

    # -- producer side (any thread) ------------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def push(self, index: int, text: str, logprobs: tuple[TokenLogprob, ...] = ()) -> None:
        self._put(TokenDelta(index, text, logprobs))

    def finish_choice(self, index: int, reason: FinishReason) -> None:
        self._put(ChoiceFinished(index, reason))

    def finish(self) -> None:
        self._put(_End())

    def fail(self, error: BaseException) -> None:
        self._put(_Failure(error))

    def _put(self, item: GenerationEvent | _End | _Failure) -> None:
        if self._outbox is not None:
            self._outbox.add(self, item)
            return
        try:
            self.loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._cancelled.set()

    def deliver(self, item: GenerationEvent | _End | _Failure) -> None:
        """Event-loop side of a flushed outbox."""
        self._items.put_nowait(item)

    # -- consumer side (event loop) ------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the producer to stop; it does so before its next decode step."""
        self._cancelled.set()

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> GenerationEvent:
        if self._closed:
            raise StopAsyncIteration
        item = await self._items.get()
        if isinstance(item, TokenDelta | ChoiceFinished):
            return item
        self._closed = True
        if isinstance(item, _Failure):
            raise item.error
        raise StopAsyncIteration


@dataclass(slots=True)
class EngineStats:
    """Counters a test or /readyz can read to see what the engine is doing."""

    active_generations: int = 0  # requests being generated (each may hold several choices)
    tokens_generated: int = 0
    prompt_tokens_decoded: int = 0  # prompt tokens actually computed (not reused from the prefix cache)
    generations_started: int = 0
    busy_slots: int = 0  # sequences (choices) holding a decode slot right now
    last_batch_size: int = 0  # tokens in the most recent decode step


class Engine(Protocol):
    """What every engine offers. Heavy imports happen in ``start``, never at import time."""

    context_window: int
    capabilities: frozenset[Capability]
    stats: EngineStats
    slots: int  # generations it runs at once; the admission queue holds the rest

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as the model would see it (template special tokens parsed)."""
        ...

    def render_chat(self, turns: Sequence[ChatTurn]) -> ChatPrompt:
        """The model's chat template applied to ``turns``, ending where the assistant's answer begins."""
        ...

    def generate(self, request: GenerationRequest) -> Generation:
        """Start producing tokens for ``request``; the returned generation streams them."""
        ...


@dataclass(slots=True)
class EmbedderStats:
    """Counters a test or a benchmark can read to see how well concurrent requests were batched."""

    forward_passes: int = 0
    inputs_embedded: int = 0
    last_batch_size: int = 0  # inputs in the most recent forward pass


@runtime_checkable  # the registry tells embedders from engines with isinstance
class Embedder(Protocol):
    """What an embeddings engine offers. Heavy imports happen in ``start``, never at import time.

    Inputs are token ids of the model's own tokenizer, without the special tokens the model adds around
    each input; the attributes describing the model are known once ``start`` has loaded it.
    """

    context_window: int  # tokens per input, the special tokens included
    dimensions: int  # length of every vector
    vocabulary_size: int  # valid token ids are 0 .. vocabulary_size - 1
    special_tokens: int  # tokens the model adds around every input (e.g. [CLS] and [SEP])
    capabilities: frozenset[Capability]
    stats: EmbedderStats
    slots: int  # requests in flight at once; the admission queue holds the rest

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, without the special tokens."""
        ...

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """One vector per input, in order. Concurrent calls' inputs may share a forward pass."""
        ...


@runtime_checkable
class Classifier(Protocol):
    """What a moderation engine offers: scores per safety category for each text (docs/safety.md)."""

    context_window: int  # tokens per window a text is scored on (longer texts are scored window by window)
    capabilities: frozenset[Capability]
    stats: EmbedderStats
    slots: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def classify(self, texts: Sequence[str]) -> Classified:
        """Each text's scores, in order; concurrent calls' texts may share a forward pass."""
        ...


@dataclass(frozen=True, slots=True)
class Classified:
    scores: list[dict[Category, float]]  # per text: each category's score, 0 to 1
    tokens: int  # the texts' tokens, as the model read them
