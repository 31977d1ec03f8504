"""/v1/tokenize: count a prompt's or a chat's tokens before sending it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, model_validator

from portico.schemas.chat import ChatMessage, Tool, ToolChoice
from portico.schemas.common import RequestModel


class TokenizeRequest(RequestModel):
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = Field(
        default=None, description="With `messages`: the tools a chat request would offer (they count as prompt)."
    )
    tool_choice: ToolChoice | None = None

    @model_validator(mode="after")
    def _exactly_one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.messages is None and self.tools is not None:
            raise ValueError("tools are counted with messages, not with a prompt")
        return self


class TokenizeResponse(BaseModel):
    model: str
    count: int
    max_model_len: int
