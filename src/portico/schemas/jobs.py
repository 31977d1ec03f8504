"""/v1/jobs: asynchronous chat completions, completions and embeddings; /v1/webhooks/secret."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from portico.schemas.common import MetadataKey, MetadataValue, RequestModel
from portico.schemas.errors import ErrorBody
from portico.schemas.lists import CursorPage

JobTypeName = Literal["chat.completion", "completion", "embedding"]
JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
JobPriorityName = Literal["job", "batch"]
WebhookUrl = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s/?#]+[^\s]*$")]


class JobCreateRequest(RequestModel):
    type: JobTypeName = Field(description="Which endpoint's body `request` is: chat.completion, completion, embedding.")
    request: dict[str, Any] = Field(
        description="The body the sync endpoint takes (`stream` is ignored: the job's events stream instead)."
    )
    webhook_url: WebhookUrl | None = Field(
        default=None, description="POSTed a signed `job.succeeded`, `job.failed` or `job.cancelled` message."
    )
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None = None
    priority: JobPriorityName = Field(
        default="job", description="`job` (default) or `batch` (after jobs); interactive requests always go first."
    )


class JobProgress(BaseModel):
    completion_tokens: int = Field(description="Pieces of text generated so far by the current attempt.")


class JobError(BaseModel):
    error: ErrorBody


class JobObject(BaseModel):
    id: str
    object: Literal["job"] = "job"
    type: JobTypeName
    status: JobStatusName
    priority: JobPriorityName
    created_at: int
    started_at: int | None = Field(description="When the current (last) attempt started.")
    finished_at: int | None
    expires_at: int | None = Field(description="When a finished job's request and result are erased.")
    attempts: int = Field(description="Attempts started; more than one when a worker died during the job.")
    cancel_requested: bool = Field(description="Cancellation was asked; a running job stops within moments.")
    progress: JobProgress
    partial_output: list[str] | None = Field(
        description="While running: the text made so far, one string per choice. Null otherwise."
    )
    request: dict[str, Any] | None = Field(description="The request body; null once expired.")
    result: dict[str, Any] | None = Field(
        description="When succeeded: the body the sync endpoint returns (with `usage.cost`)."
    )
    usage: dict[str, Any] | None = Field(
        description="Tokens and cost (USD) billed: when succeeded, or what a cancelled or failed run used."
    )
    error: JobError | None = Field(description="When failed: the error envelope the sync endpoint would return.")
    webhook_url: str | None
    metadata: dict[str, str]


class JobList(CursorPage[JobObject]): ...


class WebhookSecret(BaseModel):
    object: Literal["webhook.secret"] = "webhook.secret"
    secret: str = Field(description="`whsec_<base64 key>`: verify the `webhook-signature` of messages with it.")
