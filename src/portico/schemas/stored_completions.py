"""Stored chat completions (``store: true``): OpenAI's shapes, so the SDK's retrieve/list/update/delete work."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from portico.schemas.chat import ChatCompletion, TextPart
from portico.schemas.common import RequestModel
from portico.schemas.conversations import Metadata
from portico.schemas.lists import CursorPage


class StoredChatCompletion(ChatCompletion):
    metadata: dict[str, str] = Field(default_factory=dict)


class StoredCompletionList(CursorPage[StoredChatCompletion]): ...


class StoredCompletionUpdateRequest(RequestModel):
    metadata: Metadata | None = Field(description="Replaces the metadata; null clears it.")


class StoredCompletionDeleted(BaseModel):
    id: str
    object: Literal["chat.completion.deleted"] = "chat.completion.deleted"
    deleted: bool = True


class StoredMessage(BaseModel):
    """One message of the stored request (OpenAI's ChatCompletionStoreMessage)."""

    id: str = Field(description="`<completion id>-<index>`: usable as `after`.")
    role: Literal["system", "developer", "user", "assistant"]
    content: str
    name: str | None = None
    content_parts: list[TextPart] | None = Field(
        default=None, description="The parts, when the message's content was sent as a list of parts."
    )


class StoredMessageList(CursorPage[StoredMessage]): ...
