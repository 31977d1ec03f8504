"""POST /v1/moderations in OpenAI's shape (docs/safety.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from portico.schemas.common import RequestModel

# OpenAI's category names, top-level and sub-categories, in the order its API lists them. Portico's classifier
# scores the top-level ones; a sub-category it does not tell apart reports 0 (docs/safety.md).
OPENAI_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# The names OpenAI's own moderation models go by: a request naming one is answered by the default model.
OPENAI_MODERATION_MODELS = ("omni-moderation-latest", "text-moderation-latest", "text-moderation-stable")


class TextInput(RequestModel):
    type: Literal["text"]
    text: str


class ImageInput(RequestModel):
    type: Literal["image_url"]
    image_url: dict[str, str]


class ModerationRequest(RequestModel):
    input: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=256)]
        | Annotated[list[TextInput | ImageInput], Field(min_length=1, max_length=256)]
    ) = Field(description="A text, a list of texts, or a list of `text` (and, refused, `image_url`) parts.")
    model: str | None = Field(
        default=None,
        description="A moderation model; default (also for OpenAI's `omni-moderation-latest`): the embedded one.",
    )


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]
