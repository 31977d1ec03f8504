"""What a project's content policy says: which categories block and at what score, which side of a request is
checked, what happens to output that trips the filter, and what a suspected prompt injection does.

A policy is set per project (the admin API, ``portico projects policy``) or per tier (the tier's default for
its keys); a project's own policy wins over its key's tier's. No policy: nothing is checked.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Category(StrEnum):
    """The categories Portico's classifier scores (OpenAI's top-level moderation categories), and the
    prompt-injection signal, which policies treat apart from them."""

    HARASSMENT = "harassment"
    HATE = "hate"
    SELF_HARM = "self-harm"
    SEXUAL = "sexual"
    VIOLENCE = "violence"
    ILLICIT = "illicit"
    PROMPT_INJECTION = "prompt_injection"


BLOCKABLE: tuple[Category, ...] = tuple(category for category in Category if category is not Category.PROMPT_INJECTION)
DEFAULT_THRESHOLD = 0.5
DEFAULT_MODERATION_MODEL = "portico-moderation"
Score = Annotated[float, Field(ge=0, le=1)]


class ContentPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        default=DEFAULT_MODERATION_MODEL,
        description="The moderation model that scores the text: the embedded classifier (default) or a "
        "moderation model of the models table on an upstream (its `/v1/moderations`).",
    )
    categories: dict[Category, Score] = Field(
        default_factory=lambda: {category: DEFAULT_THRESHOLD for category in BLOCKABLE},
        description="The categories that block, each with the score (0-1) at or above which it does. "
        "Default: every category at 0.5.",
    )
    check: Literal["input", "output", "both"] = Field(
        default="input", description="Which side is checked: the request's new input, the output, or both."
    )
    on_output: Literal["stop", "fail"] = Field(
        default="stop",
        description='Output that trips the filter: `stop` ends it there (`finish_reason: "content_filter"`, '
        "with a warning), `fail` fails the request with `content_policy_violation`.",
    )
    injection: Literal["off", "warn", "block"] = Field(
        default="warn",
        description="A suspected prompt injection in the input: `warn` answers with a warning header and "
        "field, `block` refuses it with `content_policy_violation`, `off` does not check.",
    )
    injection_threshold: Score = DEFAULT_THRESHOLD

    def blocks(self, scores: dict[Category, float]) -> list[Category]:
        """The blocking categories these scores reach, in the order the policy names them."""
        return [category for category, threshold in self.categories.items() if scores.get(category, 0.0) >= threshold]
