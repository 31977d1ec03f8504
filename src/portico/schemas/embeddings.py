"""/v1/embeddings: OpenAI's request and response shapes."""

from __future__ import annotations

from typing import Annotated, Literal, cast

from pydantic import BaseModel, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from portico.schemas.common import RequestModel

# OpenAI's cap on inputs per request.
MAX_INPUTS = 2048

TokenIds = list[int]
EmbeddingInput = (
    str
    | Annotated[list[str], Field(max_length=MAX_INPUTS)]
    | TokenIds
    | Annotated[list[TokenIds], Field(max_length=MAX_INPUTS)]
)


def split_inputs(value: EmbeddingInput) -> list[str | TokenIds]:
    """One entry per embedding to return: a text, or one text's token ids."""
    if isinstance(value, str):
        return [value]
    # Validation let through only homogeneous lists, so one int means the list is one input's token ids.
    if any(isinstance(item, int) for item in value):
        return [cast(TokenIds, value)]
    return cast(list[str | TokenIds], value)


class EmbeddingRequest(RequestModel):
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    input: EmbeddingInput = Field(
        description="A string, a list of strings, a list of token ids, or a list of token-id lists. Token ids "
        "are ids of the model's own tokenizer, without the special tokens the model adds itself."
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: Annotated[str, StringConstraints(max_length=256)] | None = None

    @field_validator("input")
    @classmethod
    def _nothing_empty(cls, value: EmbeddingInput) -> EmbeddingInput:
        # Here rather than as min_length on each union member, so the error names `input`, not a member.
        inputs = split_inputs(value)
        if not inputs or any(len(item) == 0 for item in inputs):
            raise PydanticCustomError(
                "empty_input", "inputs must not be empty: send a non-empty string or list, with no empty entries"
            )
        return value

    def inputs(self) -> list[str | TokenIds]:
        return split_inputs(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(
        description="The vector; with encoding_format base64, its little-endian float32 bytes in base64."
    )


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    cost: float = 0.0  # USD


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
