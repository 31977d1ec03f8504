"""Pieces shared by the inference endpoints' requests and responses."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

INT64_MAX = 2**63 - 1
# Upper bound for token counts: far above any context window, and safe to echo back in error bodies.
MAX_TOKENS_BOUND = 2**31 - 1

MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
StopString = Annotated[str, StringConstraints(min_length=1)]


class FieldError(ValueError):
    """A model validator's complaint about one of its fields: the error's ``param`` names that field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RequestModel(BaseModel):
    """Strict: no type coercion, and an unknown field is an error naming it."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(RequestModel):
    include_usage: bool = False


class TextFormat(RequestModel):
    type: Literal["text"]


class JsonObjectFormat(RequestModel):
    type: Literal["json_object"]


class JsonSchemaSpec(RequestModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    # The field is called `schema` on the wire; it shadows a BaseModel attribute, hence the alias.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(RequestModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class SamplingFields(RequestModel):
    """The sampling parameters chat, completions and predict share, with OpenAI's bounds."""

    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_BOUND)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stop: StopString | Annotated[list[StopString], Field(max_length=4)] | None = None
    seed: int | None = Field(default=None, ge=-INT64_MAX - 1, le=INT64_MAX)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class GenerationFields(SamplingFields):
    """Fields of the OpenAI generation endpoints beyond sampling."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        default=None, description="Token id (as a string) to a bias from -100 to 100 added to its logit."
    )


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(description="Prompt tokens reused from the engine's prefix cache, not recomputed.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    cost: float = Field(description="USD, from the model's prices (0 for a model without prices).")


class ContentWarning(BaseModel):
    """A content policy's warning on an answer: its output was stopped (``content_filter``), or its input looks
    like a prompt injection (``prompt_injection``). docs/safety.md."""

    code: Literal["content_filter", "prompt_injection"]
    message: str
    categories: list[str]


def no_warnings(value: object) -> bool:
    return value is None


Warnings = Annotated[
    list[ContentWarning] | None,
    Field(default=None, exclude_if=no_warnings, description="A content policy's warnings; absent when none."),
]
