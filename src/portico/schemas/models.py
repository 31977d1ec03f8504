"""/v1/models and /v1/models/{model}/predict."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, StringConstraints

from portico.schemas.common import SamplingFields, Usage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    snapshot: str
    context_window: int
    capabilities: list[str]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class PredictRequest(SamplingFields):
    input: Annotated[str, StringConstraints(min_length=1)]


class Prediction(BaseModel):
    id: str
    object: Literal["prediction"] = "prediction"
    created: int
    model: str
    output: str
    finish_reason: Literal["stop", "length"]
    usage: Usage
