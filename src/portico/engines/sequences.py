"""The decode loop's bookkeeping: llama.cpp sequence slots and their cached tokens, the requests admitted to
them and each of their choices, and the entries of the batch being built."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any

from portico.engines.base import Generation, GenerationRequest, TokenLogprob
from portico.engines.stops import StopFilter


@dataclass(eq=False)
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV cells this sequence holds, in order
    busy: bool = False
    last_used: int = 0  # step number of its last admission, to evict the least recently used cache first


@dataclass(eq=False)
class Choice:
    owner: Submitted
    index: int
    slot: Slot
    sampler: Any
    stops: StopFilter
    decoder: codecs.IncrementalDecoder
    produced: int = 0
    next_token: int | None = None  # sampled, not yet decoded into the KV cache
    # Logprobs of tokens whose text the stop filter or the UTF-8 decoder still holds: sent with that text.
    pending: list[TokenLogprob] = field(default_factory=list)


@dataclass(eq=False)
class Submitted:
    """A request handed to the loop: waiting for slots, then running with one choice per slot."""

    request: GenerationRequest
    generation: Generation
    choices: list[Choice] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.prompt = list(self.request.prompt_tokens)

    @property
    def fed(self) -> int:
        """Prompt tokens already in the primary slot's KV cells (reused or prefilled)."""
        return min(len(self.primary.cached), len(self.prompt))

    @property
    def primary(self) -> Slot:
        return self.choices[0].slot


@dataclass(frozen=True, slots=True)
class PromptPosition:
    """A prompt token whose logits score the next prompt token (a request for the prompt's logprobs)."""

    request: Submitted
    position: int


@dataclass(slots=True)
class Entry:
    """One token of the batch being built, and who reads its logits."""

    token: int
    pos: int
    seq_id: int
    logits: bool
    reader: Choice | Submitted | PromptPosition | None


def common_prefix(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length
