"""Every wire shape a generation answers with, built once: the sync bodies (chat completion, completion,
prediction, embedding list, a cache hit's replay) and the stream chunks, for local and upstream models alike."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from portico.constants import (
    PREFIX_CHAT_COMPLETION,
    PREFIX_COMPLETION,
    PREFIX_MODERATION,
    PREFIX_PREDICTION,
    FinishReason,
    new_id,
)
from portico.safety.policy import DEFAULT_THRESHOLD, Category
from portico.schemas.chat import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChoiceLogprobs,
    ToolCall,
    ToolCallFunction,
    TopLogprob,
)
from portico.schemas.chat import TokenLogprob as WireTokenLogprob
from portico.schemas.common import ContentWarning, PromptTokensDetails, Usage
from portico.schemas.completions import Completion, CompletionChoice, CompletionLogprobs
from portico.schemas.embeddings import Embedding, EmbeddingList, EmbeddingUsage
from portico.schemas.models import Prediction
from portico.schemas.moderations import OPENAI_CATEGORIES, ModerationResponse, ModerationResult
from portico.services.generation.types import (
    Answer,
    Choice,
    ChoiceEnd,
    Event,
    Moderated,
    PolicyWarning,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    UsageReport,
    Vectors,
)
from portico.usage.meter import Charge
from portico.usage.tokens import TokenUsage

_M = TypeVar("_M", bound=BaseModel)


def wire_usage(usage: TokenUsage, cost: float) -> Usage:
    """The one conversion of a usage to the wire: tokens, cached prompt tokens, and the cost in USD."""
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
        cost=cost,
    )


def charged_usage(usage: TokenUsage, charge: Charge) -> Usage:
    return wire_usage(usage, charge.cost_of(usage))


# -- pieces ---------------------------------------------------------------------------------------------
def wire_token(logprob: TokenLogprob) -> WireTokenLogprob:
    return WireTokenLogprob(
        token=logprob.token,
        logprob=logprob.logprob,
        bytes=list(logprob.bytes),
        top_logprobs=[TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in logprob.top],
    )


def _chat_logprobs(logprobs: tuple[TokenLogprob, ...] | None) -> ChoiceLogprobs | None:
    return None if logprobs is None else ChoiceLogprobs(content=[wire_token(t) for t in logprobs])


def _completion_logprobs(logprobs: tuple[TokenLogprob, ...] | None, offset: int) -> CompletionLogprobs | None:
    """The legacy shape; ``offset``: where the first token's text begins in the choice's text."""
    if logprobs is None:
        return None
    offsets = []
    for token in logprobs:
        offsets.append(offset)
        offset += len(token.token)
    return CompletionLogprobs(
        tokens=[t.token for t in logprobs],
        token_logprobs=[t.logprob for t in logprobs],
        top_logprobs=[None if t.logprob is None else {top.token: top.logprob for top in t.top} for t in logprobs],
        text_offset=offsets,
    )


def _finish(reason: FinishReason, legacy: bool) -> str:
    """The wire name; a request that used the legacy ``functions`` hears ``function_call``."""
    return FinishReason.FUNCTION_CALL.value if legacy and reason is FinishReason.TOOL_CALLS else reason.value


def _message(choice: Choice, legacy: bool) -> AssistantMessage:
    calls = [
        ToolCall(id=c.id, function=ToolCallFunction(name=c.name, arguments=c.arguments)) for c in choice.tool_calls
    ]
    content = choice.text if choice.text or not calls else None
    if legacy and calls:
        return AssistantMessage(content=content, function_call=calls[0].function)
    return AssistantMessage(content=content, tool_calls=calls or None)


def legacy_functions(body: ChatCompletionRequest) -> bool:
    return body.functions is not None


# -- sync bodies ------------------------------------------------------------------------------------------
def _warnings(warnings: Sequence[PolicyWarning]) -> list[ContentWarning] | None:
    """A content policy's warnings on a body or chunk (each code once); None when there are none."""
    unique = {warning.code: warning for warning in warnings}
    return [warning.wire() for warning in unique.values()] or None


def chat_body(
    answer: Answer,
    charge: Charge,
    body: ChatCompletionRequest,
    warnings: Sequence[PolicyWarning] = (),
    *,
    completion_id: str | None = None,
) -> ChatCompletion:
    legacy = legacy_functions(body)
    return ChatCompletion(
        id=completion_id or new_id(PREFIX_CHAT_COMPLETION),
        created=int(time.time()),
        model=answer.origin.snapshot,
        choices=[
            ChatChoice(
                index=i,
                message=_message(c, legacy),
                finish_reason=_finish(c.finish_reason, legacy),
                logprobs=_chat_logprobs(c.logprobs),
            )
            for i, c in enumerate(answer.choices)
        ],
        usage=charged_usage(answer.usage, charge),
        warnings=_warnings(warnings),
    )


def completion_body(answer: Answer, charge: Charge, warnings: Sequence[PolicyWarning] = ()) -> Completion:
    return Completion(
        id=new_id(PREFIX_COMPLETION),
        created=int(time.time()),
        model=answer.origin.snapshot,
        choices=[
            CompletionChoice(
                index=i,
                text=c.text,
                finish_reason=c.finish_reason.value,
                logprobs=_completion_logprobs(c.logprobs, len(c.text) - sum(len(t.token) for t in c.logprobs or ())),
            )
            for i, c in enumerate(answer.choices)
        ],
        usage=charged_usage(answer.usage, charge),
        warnings=_warnings(warnings),
    )


def _threshold(name: str, thresholds: dict[Category, float]) -> float:
    try:
        return thresholds.get(Category(name), DEFAULT_THRESHOLD)
    except ValueError:  # a category only an upstream model scores
        return DEFAULT_THRESHOLD


def moderation_body(moderated: Moderated, thresholds: dict[Category, float]) -> ModerationResponse:
    """OpenAI's moderation object: every category of its API (0 where the model does not score one), the
    model's others (Portico's ``prompt_injection``), flagged at ``thresholds`` (the caller's policy's, or 0.5)."""
    results = []
    for scores in moderated.scores:
        category_scores = {name: scores.get(name, 0.0) for name in OPENAI_CATEGORIES} | scores
        categories = {name: score >= _threshold(name, thresholds) for name, score in category_scores.items()}
        blocking = [name for name, hit in categories.items() if hit and name != Category.PROMPT_INJECTION]
        results.append(
            ModerationResult(
                flagged=bool(blocking),
                categories=categories,
                category_scores=category_scores,
                category_applied_input_types={name: ["text"] for name in category_scores},
            )
        )
    return ModerationResponse(id=new_id(PREFIX_MODERATION), model=moderated.origin.snapshot, results=results)


def prediction_body(completion: ChatCompletion) -> Prediction:
    (choice,) = completion.choices
    return Prediction(
        id=new_id(PREFIX_PREDICTION),
        created=completion.created,
        model=completion.model,
        output=choice.message.content or "",
        finish_reason=choice.finish_reason,
        usage=completion.usage,
    )


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the vector as little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embedding_list(vectors: Vectors, encoding_format: str, charge: Charge) -> EmbeddingList:
    """Vectors in order (as floats or base64), the model snapshot, usage and cost."""
    as_base64 = encoding_format == "base64"
    tokens = vectors.prompt_tokens
    return EmbeddingList(
        data=[
            Embedding(index=i, embedding=_base64(vector) if as_base64 else vector)
            for i, vector in enumerate(vectors.vectors)
        ],
        model=vectors.origin.snapshot,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens, cost=charge.cost_of(TokenUsage(tokens))),
    )


def replayed(model: type[_M], stored: dict[str, Any]) -> _M:
    """A cached body as a cache hit answers it: a new id and time (for generations), its prompt tokens all
    cached, cost 0."""
    usage = {**stored["usage"], "cost": 0.0}
    body = {**stored, "usage": usage}
    if model is ChatCompletion or model is Completion:
        prefix = PREFIX_CHAT_COMPLETION if model is ChatCompletion else PREFIX_COMPLETION
        usage["prompt_tokens_details"] = {"cached_tokens": usage["prompt_tokens"]}
        body.update(id=new_id(prefix), created=int(time.time()))
    return model.model_validate(body)


def choice_texts(body: BaseModel) -> list[tuple[int, str]]:
    """(index, text) of each choice of a chat completion or completion body."""
    if isinstance(body, ChatCompletion):
        return [(choice.index, choice.message.content or "") for choice in body.choices]
    if isinstance(body, Completion):
        return [(choice.index, choice.text) for choice in body.choices]
    return []


# -- stream chunks ----------------------------------------------------------------------------------------
def usage_chunk_extras(usage: TokenUsage, charge: Charge) -> dict[str, Any]:
    """The final stream chunk's usage (with cost), and the quota warning if a quota passed 80%."""
    extras: dict[str, Any] = {"usage": charged_usage(usage, charge).model_dump()}
    ticket = charge.ticket
    if ticket is not None and (warning := ticket.quota_warning) is not None:
        extras["quota_warning"] = warning
    return extras


async def chat_chunks(
    events: AsyncIterator[Event],
    charge: Charge,
    *,
    completion_id: str,
    model: str,
    body: ChatCompletionRequest,
    include_usage: bool,
    usage_extras: dict[str, Any] | None = None,
    warning: PolicyWarning | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """OpenAI's chunk sequence: a role chunk per choice, content and tool-call deltas, a finish chunk, then
    usage if asked (with ``usage_extras`` added to that last chunk)."""
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    legacy = legacy_functions(body)

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {**head, "choices": choices, **extra}

    def choice(index: int, delta: dict[str, Any], logprobs: ChoiceLogprobs | None = None) -> dict[str, Any]:
        wire = None if logprobs is None else logprobs.model_dump()
        return chunk([{"index": index, "delta": delta, "finish_reason": None, "logprobs": wire}])

    for index in range(body.n):
        first = choice(index, {"role": "assistant", "content": ""})
        yield first if warning is None else {**first, **_warnings_field([warning])}
    async for event in events:
        if isinstance(event, TextDelta):
            yield choice(
                event.index, {"content": event.text}, _chat_logprobs(event.logprobs) if body.logprobs else None
            )
        elif isinstance(event, ToolCallDelta):
            yield choice(event.index, _tool_call_delta(event, legacy))
        elif isinstance(event, ChoiceEnd):
            finish = _finish(event.finish_reason, legacy)
            ended = [{"index": event.index, "delta": {}, "finish_reason": finish, "logprobs": None}]
            yield chunk(ended, **_warnings_field([event.warning] if event.warning else []))
        elif include_usage:
            yield chunk([], **usage_chunk_extras(event.usage, charge), **(usage_extras or {}))


def _tool_call_delta(event: ToolCallDelta, legacy: bool) -> dict[str, Any]:
    """A call's first delta names it (with its id); the following ones carry fragments of its arguments."""
    function: dict[str, Any] = {"arguments": event.arguments}
    if event.name is not None:
        function["name"] = event.name
    if legacy:
        return {"function_call": function}
    call: dict[str, Any] = {"index": event.call, "function": function}
    if event.id is not None:
        call.update(id=event.id, type="function")
    return {"tool_calls": [call]}


def _warnings_field(warnings: Sequence[PolicyWarning]) -> dict[str, Any]:
    wire = _warnings(warnings)
    return {} if wire is None else {"warnings": [warning.model_dump() for warning in wire]}


async def completion_chunks(
    events: AsyncIterator[Event],
    charge: Charge,
    *,
    completion_id: str,
    model: str,
    include_usage: bool,
    warning: PolicyWarning | None = None,
) -> AsyncIterator[dict[str, Any]]:
    head = {"id": completion_id, "object": "text_completion", "created": int(time.time()), "model": model}
    offsets: dict[int, int] = {}

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {**head, "choices": choices, **extra}

    pending = _warnings_field([warning] if warning else [])  # the input's warning, on the first chunk
    async for event in events:
        if isinstance(event, TextDelta):
            offset = offsets.get(event.index, 0)
            offsets[event.index] = offset + len(event.text)
            logprobs = _completion_logprobs(event.logprobs or None, offset)
            text = {"index": event.index, "text": event.text, "finish_reason": None}
            yield chunk([{**text, "logprobs": logprobs and logprobs.model_dump()}], **pending)
            pending = {}
        elif isinstance(event, ChoiceEnd):
            finish = event.finish_reason.value
            ended = [{"index": event.index, "text": "", "finish_reason": finish, "logprobs": None}]
            yield chunk(ended, **pending, **_warnings_field([event.warning] if event.warning else []))
            pending = {}
        elif isinstance(event, UsageReport) and include_usage:
            yield chunk([], **usage_chunk_extras(event.usage, charge))
