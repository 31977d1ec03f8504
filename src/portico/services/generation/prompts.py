"""Requests made ready for the embedded engine: prompts rendered and tokenized, sampling checked against the
model's window. Everything that can be rejected is rejected here, before admission and before any work."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from portico.constants import INLINE_TOKENIZE_CHARS, Capability
from portico.engines.base import ChatTurn, Engine, SamplingParams
from portico.engines.registry import ServedModel
from portico.errors import ContextLengthExceeded, InvalidRequest
from portico.schemas.chat import ChatCompletionRequest, ChatMessage
from portico.schemas.common import JsonObjectFormat, JsonSchemaFormat, ResponseFormat, SamplingFields
from portico.schemas.tokenize import TokenizeRequest
from portico.services.generation.types import TextRequest


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    tokens: Sequence[int]


@dataclass(frozen=True, slots=True)
class Prepared:
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


async def _chat_prompt(engine: Engine, messages: Sequence[ChatMessage]) -> tuple[Prompt, tuple[str, ...]]:
    """The chat rendered through the model's template, tokenized, and the stop strings the template implies."""
    # Chat templates know system/user/assistant; OpenAI's `developer` role is the newer name for `system`.
    turns = [ChatTurn("system" if m.role == "developer" else m.role, m.text()) for m in messages]
    rendered = engine.render_chat(turns)
    return await _prompt(engine, rendered.text), rendered.stop


async def prepare(served: ServedModel, body: TextRequest, *, max_n: int) -> Prepared:
    """``body`` for ``served``'s engine, checked against its window, its slots and what it can enforce."""
    if isinstance(body, ChatCompletionRequest):
        engine = served.generator(Capability.CHAT)
        prompt, template_stops = await _chat_prompt(engine, body.messages)
        prompts = [prompt]
        max_tokens = body.max_completion_tokens or body.max_tokens
        params = _sampling(served, body, max_tokens, prompts, _json_constraint(body.response_format))
        params = replace(params, stop=params.stop + template_stops)
    else:
        engine = served.generator(Capability.COMPLETIONS)
        prompts = [await _prompt(engine, text) for text in body.prompts()]
        params = _sampling(served, body, body.max_tokens, prompts, None)
    # Each choice decodes in its own engine slot, all at once.
    limit = min(max_n, served.engine.slots)
    if body.n > limit:
        raise InvalidRequest(f"n must be at most {limit} for this model; got {body.n}.", param="n")
    return Prepared(served, engine, prompts, params, body.n)


async def count_tokens(served: ServedModel, body: TokenizeRequest) -> int:
    """The prompt's tokens as the model would read them (chat messages through its template)."""
    engine = served.generator(Capability.TOKENIZE)
    if body.messages is not None:
        prompt, _ = await _chat_prompt(engine, body.messages)
    else:
        prompt = await _prompt(engine, body.prompt or "")
    return len(prompt.tokens)


def _sampling(
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
