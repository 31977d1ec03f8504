"""/v1/admin/...: projects, API keys and tiers of the caller's organization."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

from portico.constants import Scope
from portico.safety.policy import Category, ContentPolicy, Score
from portico.schemas.common import RequestModel
from portico.schemas.lists import CursorPage, ItemList
from portico.settings import TierSettings

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
LimitValue = int | float | None

DEFAULT_KEY_SCOPES = [Scope.MODELS_READ.value, Scope.INFERENCE.value]


class ProjectCreateRequest(RequestModel):
    name: Name


class ProjectObject(BaseModel):
    id: str
    object: Literal["organization.project"] = "organization.project"
    name: str
    created_at: int
    archived_at: int | None
    status: Literal["active", "archived"]
    content_policy: ContentPolicy | None = Field(
        description="The project's own content policy (null: its keys follow their tier's default, if any)."
    )


class ProjectList(CursorPage[ProjectObject]): ...


class KeyCreateRequest(RequestModel):
    project: Name = Field(description="Project id or name.")
    name: Name = "key"
    scopes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_KEY_SCOPES), description=f"Any of: {', '.join(Scope)}."
    )
    tier: Name = "free"
    limits: dict[str, LimitValue] = Field(
        default_factory=dict,
        description='Overrides of the tier\'s limits, e.g. {"requests_per_minute": 10}; null means unlimited.',
    )
    expires_at: int | None = Field(default=None, description="Unix seconds; absent: never expires.")


class KeyRotateRequest(RequestModel):
    grace_period_s: int = Field(
        default=3600, description="How long the previous secret keeps working (0: it stops at once)."
    )


class KeyObject(BaseModel):
    id: str
    object: Literal["organization.project.api_key"] = "organization.project.api_key"
    name: str
    project_id: str
    scopes: list[str]
    tier: str
    limits: dict[str, LimitValue]
    redacted_value: str
    created_at: int
    last_used_at: int | None
    expires_at: int | None
    revoked_at: int | None
    previous_secret_valid_until: int | None


class CreatedKeyObject(KeyObject):
    value: str = Field(description="The key itself. Shown only in this response: store it now.")


class KeyList(CursorPage[KeyObject]): ...


class ContentPolicyRequest(ContentPolicy):
    """A content policy as the admin API takes it: strict like every request body (``false`` is not a threshold
    of 0), but reading category names from their strings (strict wants ``Category`` objects)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    categories: dict[Annotated[Category, Strict(False)], Score] = Field(
        default_factory=lambda: ContentPolicy().categories,
        description=ContentPolicy.model_fields["categories"].description,
    )


class TierRequest(TierSettings):
    """A tier as POST /v1/admin/tiers takes it: strict like every request body (``false`` is not a budget of 0),
    where the settings file reads the same fields leniently."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # Strict models do not make the models of their fields strict.
    content_policy: ContentPolicyRequest | None = Field(
        default=None, description=TierSettings.model_fields["content_policy"].description
    )


class TierObject(BaseModel):
    object: Literal["tier"] = "tier"
    name: str
    requests_per_minute: int | None
    request_burst: int | None
    tokens_per_minute: int | None
    tokens_per_day: int | None
    max_concurrent: int | None
    budget_per_day_usd: float | None
    budget_per_month_usd: float | None
    content_policy: ContentPolicy | None = Field(description="The default for keys whose project has none.")
    created_at: int


class TierList(ItemList[TierObject]): ...


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class ErasedCounts(BaseModel):
    stored_completions: int
    responses: int
    conversations: int
    conversation_messages: int
    jobs: int
    job_events: int
    batches: int
    files: int
    file_bytes: int
    idempotency_records: int
    webhook_deliveries: int


class ProjectDataDeletion(BaseModel):
    object: Literal["project.data_deletion"] = "project.data_deletion"
    project_id: str
    deleted: ErasedCounts
    kept: list[str] = Field(description="What is not content and stays: the project, its keys, usage records.")
