"""/v1/batches: OpenAI's batch object, its create request, and the lines of batch input, output and error files."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from portico.constants import BatchStatus
from portico.schemas.common import MetadataKey, MetadataValue, RequestModel
from portico.schemas.lists import CursorPage, ItemList

BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]


class BatchCreateRequest(RequestModel):
    input_file_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="A file uploaded with purpose `batch`: JSONL, one request a line."
    )
    endpoint: BatchEndpoint = Field(description="Every line's `url` must be this endpoint.")
    completion_window: Literal["24h"] = Field(description="Lines not run within it are answered `batch_expired`.")
    metadata: Metadata | None = None


class BatchRequestCounts(BaseModel):
    total: int = Field(description="Lines of the input file (blank lines aside).")
    completed: int = Field(description="Lines answered in the output file.")
    failed: int = Field(description="Lines answered in the error file.")


class BatchError(BaseModel):
    """Why the whole batch failed (the input file could not be used)."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(ItemList[BatchError]): ...


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None


class BatchList(CursorPage[BatchObject]): ...


class BatchRequestLine(RequestModel):
    """One line of an input file."""

    custom_id: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    method: Literal["POST"]
    url: str
    body: dict[str, Any]


class BatchLineResponse(BaseModel):
    status_code: int
    request_id: str
    body: dict[str, Any] = Field(description="What the endpoint answers: its response, or its error envelope.")


class BatchLineError(BaseModel):
    code: str
    message: str
    line: int | None = Field(default=None, description="The input file's line (from 1), for a line that was invalid.")


class BatchResultLine(BaseModel):
    """One line of an output file (``error`` null) or error file (``error`` set; ``response`` set when the
    endpoint answered with an error status, null when the line never reached it)."""

    id: str
    custom_id: str | None
    response: BatchLineResponse | None
    error: BatchLineError | None
