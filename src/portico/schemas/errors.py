"""The error envelope every non-2xx response carries (documented in OpenAPI)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # structured details such as `limit` and `requested`

    type: str
    code: str
    message: str
    param: str | None
    retryable: bool
    request_id: str | None


class ErrorEnvelope(BaseModel):
    error: ErrorBody
