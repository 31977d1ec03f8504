"""/v1/completions: requests, responses and stream chunks (OpenAI's legacy completion shapes)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from portico.schemas.common import MAX_TOKENS_BOUND, GenerationFields, Usage, Warnings


class CompletionRequest(GenerationFields):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=32)]
    # 0: no new tokens, only the prompt (with echo and logprobs: the prompt scored, as evaluation harnesses do).
    max_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS_BOUND)
    echo: bool = Field(default=False, description="Begin each choice's text with its prompt.")
    logprobs: int | None = Field(default=None, ge=0, le=5, description="Each token's logprob and the k most likely.")
    suffix: str | None = Field(default=None, description="Text after the completion (fill in the middle).")
    best_of: int | None = Field(default=None, ge=1, le=20)

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class CompletionLogprobs(BaseModel):
    """The legacy logprobs shape: one entry per token in each list."""

    tokens: list[str]
    token_logprobs: list[float | None] = Field(description="None for an echoed prompt's first token.")
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length", "content_filter"] | None
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    """Also the shape of each stream chunk (with ``usage`` only on the final one)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    warnings: Warnings = None
