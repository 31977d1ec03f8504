"""Keeping a conversation inside its model's context window: the prompt its history makes, which of the oldest
turns to take out, and the summary the model writes of them (``ContextFitter``).

A user message and the assistant answer after it form a unit that is dropped or folded whole, so the model never
sees an answer without its question. The summary of folded turns rides in the system prompt (one system message
at the start suits every chat template).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from portico.auth.principal import Principal
from portico.constants import PREFIX_MESSAGE, CacheMode, FinishReason, new_id
from portico.engines.registry import ModelRegistry
from portico.errors import ContextLengthExceeded
from portico.schemas.chat import ChatCompletion, ChatCompletionRequest, ChatMessage
from portico.schemas.common import Usage
from portico.schemas.conversations import ContextReport
from portico.schemas.tokenize import TokenizeRequest
from portico.services.generation.pipeline import Pipeline
from portico.services.generation.types import ENDPOINT_CONVERSATION_MESSAGES, Call
from portico.storage.resources import Conversation, ConversationMessage

SUMMARY_HEADING = "Summary of the earlier conversation:"
SUMMARY_INSTRUCTION = (
    "Summarize the conversation below in a few sentences for your own later use. Keep names, facts, numbers, "
    "decisions and open questions. Write only the summary."
)
_LABELS = {"user": "User", "assistant": "Assistant", "summary": "Earlier summary"}


def answer_room(window: int, max_tokens: int | None) -> int:
    """Tokens kept free for the answer: ``max_tokens``, or a quarter of the window when it is not given."""
    return max_tokens if max_tokens is not None else max(1, window // 4)


def summary_room(window: int) -> int:
    """The longest summary asked for: an eighth of the window, between 16 and 512 tokens."""
    return max(16, min(512, window // 8))


def chat_messages(
    system: str | None, context: Sequence[ConversationMessage], new_text: str | None
) -> list[ChatMessage]:
    """The chat the model sees: system prompt (with any summary), the history in context, the new user turn."""
    summaries = [f"{SUMMARY_HEADING}\n{m.content}" for m in context if m.role == "summary"]
    system_text = "\n\n".join(part for part in (system, *summaries) if part)
    messages = [ChatMessage(role="system", content=system_text)] if system_text else []
    for message in context:
        if message.role == "user":
            messages.append(ChatMessage(role="user", content=message.content))
        elif message.role == "assistant":
            messages.append(ChatMessage(role="assistant", content=message.content))
    if new_text is not None:
        messages.append(ChatMessage(role="user", content=new_text))
    return messages


def droppable_units(context: Sequence[ConversationMessage]) -> list[list[ConversationMessage]]:
    """The history in context, oldest first, as units: a user message with the answer that follows it."""
    units: list[list[ConversationMessage]] = []
    for message in context:
        if message.role == "summary":
            continue
        if message.role == "assistant" and units and units[-1][-1].role == "user":
            units[-1].append(message)
        else:
            units.append([message])
    return units


def units_to_free(units: Sequence[Sequence[ConversationMessage]], need: int, overhead: int) -> int:
    """How many of the oldest units free at least ``need`` tokens, by their stored counts plus ``overhead`` (the
    template's tokens around each message); all of them when even that is not enough."""
    freed = 0
    for count, unit in enumerate(units, start=1):
        freed += sum(message.tokens + overhead for message in unit)
        if freed >= need:
            return count
    return len(units)


def transcript(messages: Sequence[ConversationMessage]) -> str:
    return "\n".join(f"{_LABELS.get(m.role, m.role)}: {m.content}" for m in messages)


def tail(text: str, chars: int) -> str:
    """About the last ``chars`` characters of a transcript, starting at a line (else a word) boundary."""
    if chars <= 0:
        return ""
    kept = text[len(text) - chars :]
    if kept == text:
        return text
    for boundary in ("\n", " "):
        cut = kept.find(boundary)
        if 0 <= cut < len(kept) - 1:
            return kept[cut + 1 :]
    return kept


def summary_request_messages(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content=SUMMARY_INSTRUCTION), ChatMessage(role="user", content=text)]


def usage_record(usage: Usage, model: str, finish: FinishReason | None, status: str) -> dict[str, Any]:
    """What an assistant or summary message keeps in its ``usage`` column (see storage.conversations)."""
    finish_reason = finish.value if finish in (FinishReason.STOP, FinishReason.LENGTH) else None
    return usage.model_dump() | {"model": model, "finish_reason": finish_reason, "status": status}


@dataclass(slots=True)
class Fitting:
    """The context after the strategy ran, and what it changed."""

    context: list[ConversationMessage]
    dropped: list[str] = field(default_factory=list)
    summarized: list[str] = field(default_factory=list)
    summaries: list[ConversationMessage] = field(default_factory=list)  # new, not stored yet

    def report(self) -> ContextReport:
        kept = [s.id for s in self.summaries if s.id not in self.summarized and s.id not in self.dropped]
        return ContextReport(
            dropped_message_ids=self.dropped,
            summarized_message_ids=self.summarized,
            summary_message_id=kept[-1] if kept else None,
        )


class ContextFitter:
    """Applies a conversation's context strategy before a turn; counts with the model's own tokenizer."""

    def __init__(self, pipeline: Pipeline, registry: ModelRegistry) -> None:
        self._pipeline = pipeline
        self._registry = registry

    async def fit(
        self,
        principal: Principal,
        conversation: Conversation,
        context: list[ConversationMessage],
        text: str,
        max_tokens: int | None,
    ) -> Fitting:
        model, system = conversation.model, conversation.system
        window = self._registry.resolve(model).engine.context_window
        reserve = answer_room(window, max_tokens)
        alone = await self.count_chat(model, chat_messages(system, [], text))
        if alone + reserve > window:  # no strategy helps: the message itself is too long
            raise ContextLengthExceeded(limit=window, prompt_tokens=alone, max_tokens=reserve, param="content")
        fitting = Fitting(list(context))
        while True:
            tokens = await self.count_chat(model, chat_messages(system, fitting.context, text))
            excess = tokens + reserve - window
            if excess <= 0:
                return fitting
            if conversation.context_strategy == "error":
                raise ContextLengthExceeded(limit=window, prompt_tokens=tokens, max_tokens=reserve, param="content")
            units = droppable_units(fitting.context)
            if not units:  # only a summary is left, and the message fits without it (checked above)
                fitting.dropped += [m.id for m in fitting.context]
                fitting.context = []
                continue
            content_tokens = sum(m.tokens for m in fitting.context)
            overhead = max(0, (tokens - alone - content_tokens) // len(fitting.context))
            summary = None
            if conversation.context_strategy == "summarize":
                count = units_to_free(units, excess + summary_room(window), overhead)
                taken = [m for m in fitting.context if m.role == "summary"] + [m for u in units[:count] for m in u]
                summary = await self._summarize(principal, conversation, taken, window)
            if summary is None:  # truncate_oldest, or a window too small even to ask for a summary
                count = units_to_free(units, excess, overhead)
                taken = [m for unit in units[:count] for m in unit]
                fitting.dropped += [m.id for m in taken]
            else:
                fitting.summarized += [m.id for m in taken]
                fitting.summaries.append(summary)
            taken_ids = {m.id for m in taken}
            fitting.context = [m for m in fitting.context if m.id not in taken_ids]
            if summary is not None:
                fitting.context.insert(0, summary)

    async def _summarize(
        self, principal: Principal, conversation: Conversation, folded: list[ConversationMessage], window: int
    ) -> ConversationMessage | None:
        """A summary of ``folded`` written by the conversation's model (the oldest part of a transcript too long
        for the window is cut); None when the window cannot hold even the request for a summary."""
        room = summary_room(window)
        text = transcript(folded)
        while True:
            tokens = await self.count_chat(conversation.model, summary_request_messages(text))
            if tokens + room <= window:
                break
            keep = int(len(text) * max(0, window - room) / tokens * 0.9)
            text = tail(text, keep)
            if not text:
                return None
        request = ChatCompletionRequest(
            model=conversation.model,
            messages=summary_request_messages(text),
            max_tokens=room,
            temperature=0.0,
        )
        call = Call(request, ENDPOINT_CONVERSATION_MESSAGES, moderated=False)  # the turns were checked as they came
        generated = await self._pipeline.complete(call, principal, cache=CacheMode.SKIP, semantic=False)
        answer = generated.body
        assert isinstance(answer, ChatCompletion)
        (choice,) = answer.choices
        content = (choice.message.content or "").strip()
        return ConversationMessage(
            id=new_id(PREFIX_MESSAGE),
            conversation_id=conversation.id,
            seq=0,  # set when stored
            role="summary",
            content=content,
            tokens=await self.count_text(conversation.model, content),
            in_context=True,
            usage=usage_record(answer.usage, answer.model, FinishReason(choice.finish_reason), "completed"),
            created_at=int(time.time()),
        )

    async def count_chat(self, model: str, messages: list[ChatMessage]) -> int:
        _, count = await self._pipeline.count_tokens(TokenizeRequest(model=model, messages=messages))
        return count

    async def count_text(self, model: str, text: str) -> int:
        if not text:
            return 0
        _, count = await self._pipeline.count_tokens(TokenizeRequest(model=model, prompt=text))
        return count
