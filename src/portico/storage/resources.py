"""Tables of the durable resources: idempotency records, jobs and their events, webhook deliveries, files,
batches, conversations and their messages, and stored chat completions.

Every resource row carries its ``project_id``: queries always filter on it, so another project's row is simply
not found. Times are integer Unix seconds, except where a float keeps sub-second order (events, leases).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portico.storage.models import Base

_AUTO_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements only INTEGER primary keys


class IdempotencyRecord(Base):
    """The first response to an ``Idempotency-Key`` of a project, replayed to retries with the same body."""

    __tablename__ = "idempotency_records"

    project_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))  # sha256 of method, path and body
    status: Mapped[str] = mapped_column(String(16))  # IdempotencyStatus
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    response_headers: Mapped[list[list[str]] | None] = mapped_column(JSON, default=None)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    # While in progress: when the owner's claim lapses (it died), so a retry may take over.
    locked_until: Mapped[float] = mapped_column(Float)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_project_created", "project_id", "created_at"),
        Index("ix_jobs_claim", "status", "priority", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # job_...
    project_id: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    type: Mapped[str] = mapped_column(String(32))  # chat.completion | completion | embedding
    status: Mapped[str] = mapped_column(String(16))  # JobStatus
    priority: Mapped[int] = mapped_column(Integer)  # Priority: lower runs first
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # None once erased
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    progress_tokens: Mapped[int] = mapped_column(Integer, default=0)
    partial_output: Mapped[str | None] = mapped_column(Text, default=None)
    job_metadata: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, default=None)  # set when it finishes


class JobEvent(Base):
    """One SSE event of a job; its ``id`` is the event id, so ``Last-Event-ID`` resumes from any process."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(_AUTO_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))  # queued | started | delta | completed | failed | cancelled
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)


class WebhookDelivery(Base):
    """The outbox: a webhook written in the same transaction as the state it announces, sent until it lands."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "delivered_at", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_... (the webhook-id header)
    project_id: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    delivered_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    failed_at: Mapped[int | None] = mapped_column(BigInteger, default=None)  # gave up after the last retry


class ProjectSecret(Base):
    """Per-project secrets: the webhook signing secret (Standard Webhooks' ``whsec_...``)."""

    __tablename__ = "project_secrets"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    webhook_secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # file-...
    project_id: Mapped[str] = mapped_column(String(40))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))  # batch | batch_output
    bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(1024))  # relative to the files directory
    created_at: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_project_created", "project_id", "created_at"),
        Index("ix_batches_claim", "status", "created_at"),  # runners look for work by status
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # batch_...
    project_id: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(40))
    output_file_id: Mapped[str | None] = mapped_column(String(40), default=None)
    error_file_id: Mapped[str | None] = mapped_column(String(40), default=None)
    completion_window: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))  # BatchStatus
    request_total: Mapped[int] = mapped_column(Integer, default=0)
    request_completed: Mapped[int] = mapped_column(Integer, default=0)
    request_failed: Mapped[int] = mapped_column(Integer, default=0)
    batch_metadata: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    in_progress_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    finalizing_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    failed_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    expired_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    cancelling_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # conv_...
    project_id: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    system: Mapped[str | None] = mapped_column(Text, default=None)
    context_strategy: Mapped[str] = mapped_column(String(24))  # truncate_oldest | summarize | error
    conversation_metadata: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[int] = mapped_column(BigInteger)


class ConversationMessage(Base):
    __tablename__ = "conversation_messages"
    __table_args__ = (Index("ix_conversation_messages_conversation", "conversation_id", "seq"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_...
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # order within the conversation
    role: Mapped[str] = mapped_column(String(16))  # user | assistant | summary
    content: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int] = mapped_column(Integer)
    # False once dropped from the model's context (truncated, or folded into a summary); kept for history.
    in_context: Mapped[bool] = mapped_column(Boolean, default=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # assistant turns
    created_at: Mapped[int] = mapped_column(BigInteger)


class StoredCompletion(Base):
    """A chat completion made with ``store: true``: its request and response, and editable metadata."""

    __tablename__ = "stored_completions"
    __table_args__ = (Index("ix_stored_completions_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # chatcmpl-...
    project_id: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    completion_metadata: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[int] = mapped_column(BigInteger)


class StoredResponse(Base):
    """A response of the Responses API (``store: true``): the request, the response object as last seen, its
    input items, and its turn as chat messages for a later ``previous_response_id``. A background response
    names the job that runs it; its row is brought up to date from the job when it is read."""

    __tablename__ = "responses"
    __table_args__ = (Index("ix_responses_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # resp_...
    project_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))  # ResponseStatus
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # The chat messages before this response's input (its previous responses' turns), and of this turn.
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    turn: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
