"""/v1/completions: requests, responses and stream chunks (OpenAI's legacy completion shapes)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from portico.schemas.common import GenerationFields, Usage


class CompletionRequest(GenerationFields):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=32)]

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class Completion(BaseModel):
    """Also the shape of each stream chunk (with ``usage`` only on the final one)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
