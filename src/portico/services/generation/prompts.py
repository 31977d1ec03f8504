"""Requests made ready for the embedded engine: prompts rendered and tokenized, sampling checked against the
model's window. Everything that can be rejected is rejected here, before admission and before any work."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from portico.constants import INLINE_TOKENIZE_CHARS, Capability
from portico.engines.base import Engine, SamplingParams
from portico.engines.registry import ServedModel
from portico.errors import ContextLengthExceeded, InvalidRequest, UnsupportedParameter
from portico.schemas.chat import TEXT_PARTS, ChatCompletionRequest, ChatMessage
from portico.schemas.common import JsonObjectFormat, JsonSchemaFormat, ResponseFormat, SamplingFields, TextFormat
from portico.schemas.completions import CompletionRequest
from portico.schemas.tokenize import TokenizeRequest
from portico.services.generation.tool_calls import ToolUse, chat_turns, tool_use
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
    tools: ToolUse | None = None  # the functions the model was offered (its answer is read for calls)
    echo: bool = False  # a completion's choices begin with their prompt

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


async def _chat_prompt(
    engine: Engine, messages: Sequence[ChatMessage], tools: ToolUse | None = None
) -> tuple[Prompt, tuple[str, ...]]:
    """The chat rendered through the model's template, tokenized, and the stop strings the template implies."""
    rendered = engine.render_chat(chat_turns(messages, tools))
    return await _prompt(engine, rendered.text), rendered.stop


def _text_only(body: ChatCompletionRequest) -> None:
    """Refuse what a text model cannot serve, naming the parameter (an upstream model gets it passed on)."""
    for number, message in enumerate(body.messages):
        if isinstance(message.content, list):
            for part_number, part in enumerate(message.content):
                if not isinstance(part, TEXT_PARTS):
                    raise UnsupportedParameter(
                        f"This model reads text only; '{part.type}' content needs a model that accepts it.",
                        param=f"messages[{number}].content[{part_number}].type",
                    )
        if message.audio is not None:
            raise UnsupportedParameter("This model reads text only.", param=f"messages[{number}].audio")
    if body.audio is not None or (body.modalities is not None and "audio" in body.modalities):
        raise UnsupportedParameter("This model answers in text only.", param="audio" if body.audio else "modalities")
    for name in ("web_search_options", "moderation"):
        if getattr(body, name) is not None:
            raise UnsupportedParameter(f"{name} is not supported by this model.", param=name)


async def prepare(served: ServedModel, body: TextRequest, *, max_n: int) -> Prepared:
    """``body`` for ``served``'s engine, checked against its window, its slots and what it can enforce."""
    tools: ToolUse | None = None
    if isinstance(body, ChatCompletionRequest):
        engine = served.generator(Capability.CHAT)
        _text_only(body)
        tools = tool_use(body)
        if tools is not None:
            served.generator(Capability.TOOLS)
            if body.response_format is not None and not isinstance(body.response_format, TextFormat):
                raise UnsupportedParameter(
                    "response_format cannot be combined with tools on this model; send one of them, or "
                    "tool_choice: none.",
                    param="response_format",
                )
        prompt, template_stops = await _chat_prompt(engine, body.messages, tools)
        prompts = [prompt]
        max_tokens = body.max_completion_tokens or body.max_tokens
        params = _sampling(served, body, max_tokens, prompts, _json_constraint(body.response_format))
        top = (body.top_logprobs or 0) if body.logprobs else None
        grammar = tools.grammar() if tools is not None else None
        params = replace(params, stop=params.stop + template_stops, grammar=grammar, logprobs=top)
    else:
        engine = served.generator(Capability.COMPLETIONS)
        _completion_only(body)
        prompts = [await _prompt(engine, text) for text in body.prompts()]
        params = replace(_sampling(served, body, body.max_tokens, prompts, None), logprobs=body.logprobs)
    params = replace(params, logit_bias=_logit_bias(body.logit_bias))
    if params.logprobs is not None:
        served.generator(Capability.LOGPROBS)
    # Each choice decodes in its own engine slot, all at once.
    limit = min(max_n, served.engine.slots)
    if body.n > limit:
        raise InvalidRequest(f"n must be at most {limit} for this model; got {body.n}.", param="n")
    echo = isinstance(body, CompletionRequest) and body.echo
    return Prepared(served, engine, prompts, params, body.n, tools, echo)


def _completion_only(body: CompletionRequest) -> None:
    if body.suffix is not None:
        raise UnsupportedParameter(
            "This model cannot fill in the middle; send the prompt without suffix.", param="suffix"
        )
    if body.best_of is not None and body.best_of != body.n:
        raise UnsupportedParameter("best_of must equal n (or be left out) on this model.", param="best_of")


async def count_tokens(served: ServedModel, body: TokenizeRequest) -> int:
    """The prompt's tokens as the model would read them (chat messages and their tools through its template)."""
    engine = served.generator(Capability.TOKENIZE)
    if body.messages is not None:
        chat = ChatCompletionRequest(
            model=body.model, messages=body.messages, tools=body.tools, tool_choice=body.tool_choice
        )
        prompt, _ = await _chat_prompt(engine, body.messages, tool_use(chat))
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


def _logit_bias(raw: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    bias: list[tuple[int, float]] = []
    for token, value in (raw or {}).items():
        if not token.isdigit():
            raise InvalidRequest(f"logit_bias keys are token ids; got '{token}'.", param="logit_bias")
        bias.append((int(token), value))
    return tuple(bias)
