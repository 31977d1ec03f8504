"""/v1/tokenize: count a prompt's or a chat's tokens before sending it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, model_validator

from portico.schemas.chat import ChatMessage
from portico.schemas.common import RequestModel


class TokenizeRequest(RequestModel):
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _exactly_one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self


class TokenizeResponse(BaseModel):
    model: str
    count: int
    max_model_len: int
