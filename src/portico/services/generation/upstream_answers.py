"""Reading an upstream's answers: OpenAI-compatible JSON (whole answers and stream chunks) as the pipeline's
choices, tool calls, logprobs and usage, refusing shapes Portico would not pass on."""

from __future__ import annotations

import math
from typing import Any

from portico.constants import FinishReason
from portico.engines.registry import ServedModel
from portico.errors import UpstreamError
from portico.services.generation.types import TokenLogprob, ToolCall, ToolCallDelta, TopToken
from portico.usage.tokens import TokenUsage

CHARS_PER_TOKEN = 3  # the estimate's ratio: generous for English with BPE tokenizers (about 4 characters a token)


def estimated_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def usage_of(raw: Any) -> TokenUsage | None:
    """The upstream's ``usage`` object, or None if it sent none (or something else)."""
    if not isinstance(raw, dict):
        return None
    try:
        prompt = int(raw.get("prompt_tokens") or 0)
        completion = int(raw.get("completion_tokens") or 0)
        details = raw.get("prompt_tokens_details")
        cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    except (TypeError, ValueError):
        return None
    return TokenUsage(prompt, completion, cached)


def choice_text(choice: dict[str, Any]) -> str:
    """A choice's text in a chat answer, a completion answer, or either kind of stream chunk."""
    part = choice.get("message") or choice.get("delta")
    text = part.get("content") if isinstance(part, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


def tool_calls_of(choice: dict[str, Any]) -> tuple[ToolCall, ...]:
    """The tool calls of a chat answer's choice (a legacy ``function_call`` as one call without an id)."""
    message = choice.get("message")
    if not isinstance(message, dict):
        return ()
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict) and isinstance(c.get("function"), dict)]
    found = [ToolCall(str(c.get("id") or ""), *_function(c["function"])) for c in calls]
    if isinstance(function := message.get("function_call"), dict):
        found.append(ToolCall("", *_function(function)))
    return tuple(found)


def _function(function: dict[str, Any]) -> tuple[str, str]:
    return str(function.get("name") or ""), str(function.get("arguments") or "")


def call_deltas(index: int, choice: dict[str, Any]) -> list[ToolCallDelta]:
    """A stream chunk's tool-call deltas, relayed as they came (each call's own ``index``)."""
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return []
    deltas = []
    for call in delta.get("tool_calls") or []:
        if isinstance(call, dict):
            function = call.get("function")
            name, arguments = _function(function) if isinstance(function, dict) else ("", "")
            deltas.append(ToolCallDelta(index, int(call.get("index", 0)), call.get("id"), name or None, arguments))
    if isinstance(function := delta.get("function_call"), dict):
        name, arguments = _function(function)
        deltas.append(ToolCallDelta(index, 0, None, name or None, arguments))
    return deltas


def logprobs_of(choice: dict[str, Any]) -> tuple[TokenLogprob, ...] | None:
    """A choice's logprobs, in chat's shape or the legacy completions one; None if it has none."""
    raw = choice.get("logprobs")
    if not isinstance(raw, dict):
        return None
    try:
        if isinstance(content := raw.get("content"), list):
            return tuple(_token(t) for t in content)
        tokens = raw.get("tokens") or []
        tops = raw.get("top_logprobs") or [None] * len(tokens)
        return tuple(
            TokenLogprob(
                token,
                float(logprob or 0.0),
                tuple(token.encode()),
                tuple(TopToken(k, float(v), tuple(k.encode())) for k, v in (top or {}).items()),
            )
            for token, logprob, top in zip(tokens, raw.get("token_logprobs") or [], tops, strict=False)
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _token(raw: dict[str, Any]) -> TokenLogprob:
    top = tuple(_top(alternative) for alternative in raw.get("top_logprobs") or [])
    return TokenLogprob(raw["token"], float(raw["logprob"]), tuple(raw.get("bytes") or ()), top)


def _top(raw: dict[str, Any]) -> TopToken:
    return TopToken(raw["token"], float(raw["logprob"]), tuple(raw.get("bytes") or ()))


def malformed(served: ServedModel) -> UpstreamError:
    return UpstreamError(f"The upstream serving '{served.alias}' answered in a shape Portico does not pass on.")


def choices_of(served: ServedModel, raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(c, dict) and isinstance(c.get("index", 0), int) for c in raw):
        raise malformed(served)
    return raw


def finish_reason_of(served: ServedModel, raw: Any) -> FinishReason:
    try:
        reason = FinishReason(raw)
    except ValueError:
        raise malformed(served) from None
    if reason is FinishReason.CANCELLED:
        raise malformed(served)
    return reason
