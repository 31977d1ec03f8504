"""/v1/conversations: server-side multi-turn state, its messages and the context report of each turn."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from portico.schemas.chat import TextPart
from portico.schemas.common import MetadataKey, MetadataValue, RequestModel, SamplingFields, StreamOptions, Usage
from portico.schemas.lists import CursorPage

ContextStrategy = Literal["truncate_oldest", "summarize", "error"]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]


class ConversationCreateRequest(RequestModel):
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    system: str | None = Field(default=None, description="The system prompt, kept at the start of every turn.")
    metadata: Metadata | None = None
    context_strategy: ContextStrategy = Field(
        default="truncate_oldest",
        description="When the history no longer fits the model's context window: drop the oldest user/assistant "
        "pairs (`truncate_oldest`), fold them into a generated summary (`summarize`), or answer 400 "
        "context_length_exceeded (`error`).",
    )


class MessageCreateRequest(SamplingFields):
    content: Annotated[str, StringConstraints(min_length=1)] | Annotated[list[TextPart], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = Field(
        default=None, description="Accepted for symmetry with chat completions; a turn's stream always ends with usage."
    )

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ConversationUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float = Field(description="USD: every turn and every summary of the conversation.")


class ConversationObject(BaseModel):
    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    model: str
    system: str | None
    metadata: dict[str, str]
    context_strategy: ContextStrategy
    usage: ConversationUsage


class ConversationList(CursorPage[ConversationObject]): ...


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True


class MessageObject(BaseModel):
    id: str
    object: Literal["conversation.message"] = "conversation.message"
    conversation_id: str
    created_at: int
    role: Literal["user", "assistant", "summary"]
    content: str
    tokens: int = Field(description="Tokens of the content alone.")
    in_context: bool = Field(
        description="False once dropped from the model's context (truncated, or folded into a summary)."
    )
    status: Literal["completed", "incomplete"] = Field(
        description="`incomplete`: the client went away while this answer was being generated; it holds what was "
        "made (and billed) until then."
    )
    model: str | None = Field(default=None, description="The model snapshot that generated it (assistant, summary).")
    finish_reason: Literal["stop", "length"] | None = None
    usage: Usage | None = Field(default=None, description="The generation's usage and cost (assistant, summary).")


class MessageList(CursorPage[MessageObject]): ...


class ContextReport(BaseModel):
    """What this turn did to keep the conversation inside the model's context window."""

    dropped_message_ids: list[str] = Field(description="Left out of the context from this turn on (truncate_oldest).")
    summarized_message_ids: list[str] = Field(description="Folded into the new summary (summarize).")
    summary_message_id: str | None = Field(description="The summary made in this turn, if any.")


class TurnObject(MessageObject):
    """The assistant's message, the user message it answers, and the context report of the turn."""

    user_message_id: str
    context: ContextReport
